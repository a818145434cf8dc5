"""What the console saw published: every event (matched or not) and every callback, newest last.

Events no subscription wants are not stored by Event Grid (only counted), so the console keeps its own
short memory of them, fed by the publisher's observers after each commit. It lives in memory: a restart
empties it (deliveries and dead letters, which are stored, stay visible).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from callgrid.clock import Clock


@dataclass
class Observed:
    seq: int
    kind: str  # "event" (a topic's event) or "callback" (Call Automation, to an app's callback URL)
    where: str  # the topic's source id, or the callback URL
    event: dict[str, Any]
    matched: list[str]  # ids of the subscriptions it was queued for (events only)
    at: float  # the simulation's time when it was published
    event_type: str = field(init=False)
    event_id: str = field(init=False)
    # The subscriptions' verdicts, worked out once per version of the subscription table.
    explained: tuple[int, list[Any]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.event_type = str(self.event.get("eventType") or self.event.get("type") or "")
        self.event_id = str(self.event.get("id") or "")


class Journal:
    def __init__(self, clock: Clock, size: int = 500) -> None:
        self._clock = clock
        self._items: deque[Observed] = deque(maxlen=size)
        self._seq = 0
        self._changed = asyncio.Event()
        self._waiting = 0  # live streams waiting: with none, a poke costs nothing

    def observe(self, kind: str, where: str, event: dict[str, Any], matched: list[str]) -> None:
        """The publisher's observer (called after commit, in the event loop); "reset" forgets all."""
        if kind == "reset":
            self.clear()
            return
        self._seq += 1
        self._items.append(Observed(self._seq, kind, where, event, list(matched), self._clock.now()))
        self.poke()

    def poke(self) -> None:
        """Something changed: live streams render now rather than at their next tick."""
        if self._waiting:
            self._changed.set()
            self._changed = asyncio.Event()  # each waiter holds the one it began waiting on

    async def wait(self, timeout: float) -> None:
        """Until the next poke, or `timeout` seconds."""
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        finally:
            self._waiting -= 1

    def recent(self, kind: str, limit: int) -> list[Observed]:
        """The newest `limit` items of `kind`, newest first."""
        found: list[Observed] = []
        for item in reversed(self._items):
            if item.kind == kind:
                found.append(item)
                if len(found) >= limit:
                    break
        return found

    def by_event_id(self, event_id: str) -> Observed | None:
        return next((i for i in reversed(self._items) if i.event_id == event_id), None)

    def clear(self) -> None:
        self._items.clear()
        self.poke()
