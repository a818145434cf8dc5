"""Counters of the media plane, served in `/metrics` beside Event Grid's: what was dropped and why,
and how late the 20 ms ticks ran. Counted on the plane's thread, read on the server's: behind a lock."""

from __future__ import annotations

import collections
import threading


class MediaMetrics:
    def __init__(self) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self.max_lateness_seconds = 0.0
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def lateness(self, seconds: float) -> None:
        if seconds > self.max_lateness_seconds:
            self.max_lateness_seconds = seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            counted = {k: float(v) for k, v in self.counters.items()}
        return {**counted, "maxTickLatenessSeconds": self.max_lateness_seconds}
