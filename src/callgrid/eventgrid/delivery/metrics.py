"""Event Grid's Azure Monitor metrics (eventgrid.md 6.1) in Prometheus' text format.

Names are Azure's in snake case under `eventgrid_` (PublishSuccessCount ->
`eventgrid_publish_success_count`), with Azure's dimensions as labels (`topic`,
`event_subscription_name`, `dead_letter_reason`, `drop_reason`, `error_type`).

Counts are durable counters (`StoreTx.add_metric_counts`): a `MetricCounts` the caller fills as it goes is
written with a transaction. Those of system events and deliveries, the hot path, gather in a
`MetricsBuffer` once their transaction commits, and are folded into one of the delivery engine's own
transactions, at most every `FOLD_INTERVAL_SECONDS` while it is busy and at once when it goes idle: a
routed call's dozen counter updates no longer ride on each of its commits. A scrape reads one row per
topic, subscription, metric and label, however long the history, plus what is still buffered; counts
survive restarts and the retention purge of old deliveries (a process killed while busy loses at most
the last interval's counts; the events themselves are never at stake). Histograms are stored as per-bucket
counts plus a sum and a count. Topics are lower-cased ARM ids, as Event Grid stamps system events.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable

# Seconds from publish to successful delivery (on callgrid's clock).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 3600, 21600, 86400)
# Milliseconds a destination took to answer one attempt (real time).
DURATION_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

PUBLISH_SUCCESS = "PublishSuccessCount"
PUBLISH_FAIL = "PublishFailCount"
PUBLISH_LATENCY = "PublishSuccessLatencyInMs"
UNMATCHED = "UnmatchedEventCount"
MATCHED = "MatchedEventCount"
DELIVERED = "DeliverySuccessCount"
ATTEMPT_FAILED = "DeliveryAttemptFailCount"
DEAD_LETTERED = "DeadLetteredCount"
DROPPED = "DroppedEventCount"
DURATION = "DestinationProcessingDurationInMs"
LATENCY = "DeliveryLatencySeconds"  # callgrid's own

_HISTOGRAMS = {DURATION: DURATION_BUCKETS_MS, LATENCY: LATENCY_BUCKETS}

# (topic, subscription id or '', metric, label or '') -> value
CounterRow = tuple[str, str, str, str, float]
Labels = tuple[tuple[str, str], ...]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricCounts:
    """Increments gathered during one transaction, written with it in one statement batch."""

    def __init__(self) -> None:
        self._counts: defaultdict[tuple[str, str, str, str], float] = defaultdict(float)

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, topic: str, subscription_id: str, metric: str, label: str = "", value: float = 1.0) -> None:
        self._counts[(topic.lower(), subscription_id, metric, label)] += value

    def observe(self, topic: str, subscription_id: str, metric: str, value: float) -> None:
        bounds = _HISTOGRAMS[metric]
        index = bisect.bisect_left(bounds, value)
        bucket = _number(bounds[index]) if index < len(bounds) else "+Inf"
        self.add(topic, subscription_id, metric, "le=" + bucket)
        self.add(topic, subscription_id, metric, "sum", value)
        self.add(topic, subscription_id, metric, "count")

    # -------------------------------------------------------------- publishing

    def published(self, topic: str, matched: Iterable[str]) -> None:
        self.add(topic, "", PUBLISH_SUCCESS)
        any_match = False
        for subscription_id in matched:
            any_match = True
            self.add(topic, subscription_id, MATCHED)
        if not any_match:
            self.add(topic, "", UNMATCHED)

    def publish_failed(self, topic: str, error_type: str, events: int = 1) -> None:
        self.add(topic, "", PUBLISH_FAIL, error_type, events)

    def publish_latency(self, topic: str, milliseconds: float) -> None:
        self.add(topic, "", PUBLISH_LATENCY, "", round(milliseconds, 3))

    # -------------------------------------------------------------- delivery

    def attempt(self, topic: str, subscription_id: str, ok: bool, outcome: str, duration_ms: float) -> None:
        self.observe(topic, subscription_id, DURATION, duration_ms)
        if not ok:
            self.add(topic, subscription_id, ATTEMPT_FAILED, outcome)

    def ended(
        self, topic: str, subscription_id: str, status: str, reason: str | None, latency_seconds: float = 0.0
    ) -> None:
        """A delivery that reached a final status (pending ones are not counted yet)."""
        if status == "delivered":
            self.add(topic, subscription_id, DELIVERED)
            self.observe(topic, subscription_id, LATENCY, max(0.0, latency_seconds))
        elif status == "deadLettered":
            self.add(topic, subscription_id, DEAD_LETTERED, reason or "")
        elif status == "dropped":
            self.add(topic, subscription_id, DROPPED, reason or "")

    def rows(self) -> list[CounterRow]:
        return [(*key, value) for key, value in self._counts.items()]

    def merge(self, other: MetricCounts) -> None:
        for key, value in other._counts.items():
            self._counts[key] += value

    def clear(self) -> None:
        self._counts.clear()


# While the engine is busy, buffered counts are written at most this often (real time).
FOLD_INTERVAL_SECONDS = 0.25


class MetricsBuffer:
    """Committed counts not yet written, and the folding of them into a transaction.

    One fold at a time: its counts leave the buffer when they are written into a transaction and come
    back if that transaction does not commit. A scrape (`reading`) holds folds off while it reads, so it
    sees each count exactly once: in the store or in the buffer.
    """

    def __init__(self, interval: float = FOLD_INTERVAL_SECONDS) -> None:
        self._pending = MetricCounts()
        self._interval = interval
        self._last_fold = 0.0
        self._readers = 0
        self._no_fold = asyncio.Event()
        self._no_fold.set()

    def add(self, counts: MetricCounts) -> None:
        self._pending.merge(counts)

    def fold(self, own: MetricCounts, *, idle: bool) -> MetricCounts | None:
        """What a transaction should write: `own` (its counts) with everything buffered, if a fold is due
        (the engine is idle, or the interval has passed) and none is under way; else None, and the caller
        adds `own` to the buffer once it commits. A fold must end with `folded`."""
        if not (self._pending or own) or self._readers or not self._no_fold.is_set():
            return None
        now = time.monotonic()
        if not idle and now - self._last_fold < self._interval:
            return None
        self._no_fold.clear()
        self._last_fold = now
        taken, self._pending = self._pending, MetricCounts()
        taken.merge(own)
        return taken

    def folded(self, taken: MetricCounts, committed: bool) -> None:
        """The fold's transaction ended: its counts are in the store, or back in the buffer."""
        if not committed:
            self._pending.merge(taken)
        self._no_fold.set()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[Callable[[], list[CounterRow]]]:
        """For a scrape: no fold moves counts from the buffer to the store while it reads the store; what
        it yields gives the buffered rows, to add to what was read."""
        while not self._no_fold.is_set():
            await self._no_fold.wait()
        self._readers += 1
        try:
            yield self._pending.rows
        finally:
            self._readers -= 1

    def clear(self) -> None:
        self._pending.clear()


# ------------------------------------------------------------------ exposition


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


# metric -> (Prometheus name, help, extra label name or None, per subscription)
_COUNTERS = (
    (PUBLISH_SUCCESS, "eventgrid_publish_success_count", "Events published to the topic.", None, False),
    (PUBLISH_FAIL, "eventgrid_publish_fail_count", "Events whose publish request was refused.", "error_type", False),
    (
        PUBLISH_LATENCY,
        "eventgrid_publish_success_latency_in_ms",
        "Milliseconds spent accepting successful publish requests, in total.",
        None,
        False,
    ),
    (UNMATCHED, "eventgrid_unmatched_event_count", "Events that matched no subscription.", None, False),
    (MATCHED, "eventgrid_matched_event_count", "Events matched.", None, True),
    (DELIVERED, "eventgrid_delivery_success_count", "Events delivered.", None, True),
    (ATTEMPT_FAILED, "eventgrid_delivery_attempt_fail_count", "Failed attempts, per event.", "error_type", True),
    (DEAD_LETTERED, "eventgrid_dead_lettered_count", "Events dead-lettered.", "dead_letter_reason", True),
    (DROPPED, "eventgrid_dropped_event_count", "Events dropped.", "drop_reason", True),
)
_HISTOGRAM_FAMILIES = (
    (
        DURATION,
        "eventgrid_destination_processing_duration_ms",
        "How long the destination took to answer an attempt, in ms (DestinationProcessingDurationInMs).",
    ),
    (LATENCY, "eventgrid_delivery_latency_seconds", "Time from publish to successful delivery, on callgrid's clock."),
)


def render(rows: Iterable[CounterRow], names: dict[str, str]) -> str:
    """Exposition text from `StoreTx.metric_counts()`; `names` maps subscription ids to names."""

    def base(topic: str, subscription_id: str, per_subscription: bool) -> Labels:
        if not per_subscription:
            return (("topic", topic),)
        name = names.get(subscription_id) or subscription_id.rstrip("/").rsplit("/", 1)[-1]
        return (("topic", topic), ("event_subscription_name", name.upper()))

    by_metric: dict[str, list[tuple[str, str, str, float]]] = defaultdict(list)
    for topic, subscription_id, metric, label, value in rows:
        by_metric[metric].append((topic, subscription_id, label, value))
    lines: list[str] = []
    for metric, prom, help_text, extra, per_subscription in _COUNTERS:
        lines += [f"# HELP {prom} {help_text} ({metric})", f"# TYPE {prom} counter"]
        samples: defaultdict[Labels, float] = defaultdict(float)
        for topic, subscription_id, label, value in by_metric.get(metric, ()):
            labels = base(topic, subscription_id, per_subscription)
            samples[(*labels, (extra, label)) if extra else labels] += value
        lines += [f"{prom}{_labels(labels)} {_number(value)}" for labels, value in sorted(samples.items())]
    for metric, prom, help_text in _HISTOGRAM_FAMILIES:
        lines += [f"# HELP {prom} {help_text}", f"# TYPE {prom} histogram"]
        series: dict[Labels, dict[str, float]] = defaultdict(dict)
        for topic, subscription_id, label, value in by_metric.get(metric, ()):
            parts = series[base(topic, subscription_id, True)]
            parts[label] = parts.get(label, 0.0) + value
        for labels, parts in sorted(series.items()):
            running = 0.0
            for bound in (*(_number(b) for b in _HISTOGRAMS[metric]), "+Inf"):
                running += parts.get("le=" + bound, 0.0)
                lines.append(f"{prom}_bucket{_labels((*labels, ('le', bound)))} {_number(running)}")
            lines.append(f"{prom}_sum{_labels(labels)} {_number(round(parts.get('sum', 0.0), 6))}")
            lines.append(f"{prom}_count{_labels(labels)} {_number(parts.get('count', 0.0))}")
    return "\n".join(lines) + "\n"
