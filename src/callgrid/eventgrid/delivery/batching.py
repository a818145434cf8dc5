"""Output batching (eventgrid.md 4.4): group a subscription's due events into POSTs.

`maxEventsPerBatch` is a hard ceiling, `preferredBatchSizeInKilobytes` a target: an event larger
than the target still goes, alone. Best effort: what is due now is sent now, never held back to fill.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def plan_batches(items: Sequence[tuple[T, int]], max_events: int, max_bytes: int) -> list[list[T]]:
    """Split (item, encoded size) pairs, in order, into batches within both limits."""
    batches: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item, item_size in items:
        # JSON array framing: one comma per extra element, two brackets overall.
        cost = item_size + (1 if current else 2)
        if current and (len(current) >= max_events or size + cost > max_bytes):
            batches.append(current)
            current, size = [], 0
            cost = item_size + 2
        current.append(item)
        size += cost
    if current:
        batches.append(current)
    return batches
