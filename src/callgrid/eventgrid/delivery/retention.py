"""Retention: ended deliveries are forgotten after a while, so the store does not grow without bound.

Delivered and dropped deliveries, with their attempt history, are purged once `keep_seconds` have
passed since their last attempt fell due; an event goes with its last delivery (an event no
subscription matched is never stored). Dead-lettered deliveries and their events stay, so dead
letters can be listed and replayed. Metrics are counters of their own and are not affected.
The purge runs on the clock every `interval_seconds`, in small transactions, so it never holds
the store for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from callgrid.clock import Clock
from callgrid.store import Store

log = logging.getLogger(__name__)


class Retention:
    def __init__(
        self, store: Store, clock: Clock, keep_seconds: float, *, interval_seconds: float = 60.0, batch: int = 500
    ) -> None:
        self._store = store
        self._clock = clock
        self.keep_seconds = keep_seconds
        self._interval = interval_seconds
        self._batch = batch

    async def purge(self) -> int:
        """Purge everything that is due now, one batch per transaction; returns how many deliveries went."""
        if self.keep_seconds <= 0:
            return 0
        total = 0
        while True:
            cutoff = self._clock.now() - self.keep_seconds
            async with self._store.transaction() as tx:
                purged = await tx.purge_ended_deliveries(cutoff, self._batch)
            total += purged
            if purged < self._batch:
                return total
            await asyncio.sleep(0)  # let publishers and the delivery engine in between batches

    async def run_forever(self) -> None:
        if self.keep_seconds <= 0:
            return
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("retention purge failed")
            deadline = self._clock.now() + self._interval
            with contextlib.suppress(TimeoutError):
                # Real-time cap as well: a virtual clock may jump far ahead between two looks.
                await asyncio.wait_for(self._clock.sleep_until(deadline), self._interval)
