"""Durable timers (ring timeouts, simulated device actions), fired on the injectable clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from callgrid.clock import Clock
from callgrid.store import Store, StoreTx, StoreUnavailable, TimerRow
from callgrid.store.keys import ordered_uuid

log = logging.getLogger(__name__)

TimerHandler = Callable[[StoreTx, TimerRow], Awaitable[None]]

# Even with nothing due, look again this often (real seconds): another node may have added work.
_IDLE_POLL_SECONDS = 1.0


class TimerService:
    def __init__(self, store: Store, clock: Clock, *, idle_poll_seconds: float = _IDLE_POLL_SECONDS) -> None:
        self._store = store
        self._clock = clock
        self._idle_poll = idle_poll_seconds
        self._handlers: dict[str, TimerHandler] = {}
        self._wake = asyncio.Event()
        # When the loop next looks by itself; +inf while it is looking: a timer added then may come after
        # the look read the store (a transaction's end awaits its group's COMMIT), so it wakes the loop, which
        # looks once more before it sleeps.
        self._deadline = math.inf

    def register(self, kind: str, handler: TimerHandler) -> None:
        self._handlers[kind] = handler

    def wake(self) -> None:
        """Look for due timers now (another node added one)."""
        self._wake.set()

    async def schedule(self, tx: StoreTx, kind: str, due_at: float, payload: dict[str, Any]) -> str:
        timer_id = ordered_uuid()
        await tx.add_timer(TimerRow(timer_id, due_at, kind, payload))
        # Most timers (ring timeouts) fall due long after the loop's next look: no need to wake it.
        if due_at < self._deadline:
            self._wake.set()
        return timer_id

    async def run_due(self) -> float | None:
        """Fire every timer that is due now, each in its own transaction with its removal; returns when
        the next one falls due (read in the transaction of the last timer fired, or of the look that found
        none: a lone timer costs one transaction, not two)."""
        while True:
            timer: TimerRow | None = None
            try:
                async with self._store.transaction() as tx:
                    now = self._clock.now()
                    due = await tx.due_timers(now, 1)
                    if not due:
                        return await tx.next_timer_due()
                    timer = due[0]
                    await tx.delete_timer(timer.id)
                    handler = self._handlers.get(timer.kind)
                    if handler is None:
                        log.warning("no handler for timer kind %s; dropped", timer.kind)
                    else:
                        await handler(tx, timer)
                    # What the handler scheduled is seen too (due now: the loop goes on).
                    next_due = await tx.next_timer_due()
                if next_due is None or next_due > now:
                    return next_due
            except StoreUnavailable:
                raise  # nothing was written: the timer is still there, and fires when the store answers
            except Exception:
                if timer is None:
                    raise
                # The failed handler's writes are rolled back; the timer is dropped, not retried forever.
                log.exception("timer %s (%s) failed; dropped", timer.id, timer.kind)
                async with self._store.transaction() as tx:
                    await tx.delete_timer(timer.id)

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            self._deadline = math.inf
            try:
                next_due = await self.run_due()
            except Exception:
                log.exception("timer loop error")
                next_due = None
            now = self._clock.now()
            if next_due is not None and next_due <= now:
                continue
            deadline = now + 3600 if next_due is None else next_due
            self._deadline = deadline
            # Also look again every second of real time: another node may have added work.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clock.sleep_until(deadline, self._wake), self._idle_poll)
