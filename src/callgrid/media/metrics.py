"""Counters of the media plane, served in `/metrics` beside Event Grid's: what was dropped and why,
and how late the 20 ms ticks ran."""

from __future__ import annotations

import collections


class MediaMetrics:
    def __init__(self) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self.max_lateness_seconds = 0.0

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def lateness(self, seconds: float) -> None:
        if seconds > self.max_lateness_seconds:
            self.max_lateness_seconds = seconds

    def snapshot(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.counters.items()}, "maxTickLatenessSeconds": self.max_lateness_seconds}
