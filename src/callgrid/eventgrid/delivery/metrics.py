"""Event Grid's Azure Monitor metrics (eventgrid.md 6.1) in Prometheus' text format.

Names are Azure's in snake case under `eventgrid_` (PublishSuccessCount ->
`eventgrid_publish_success_count`), with Azure's dimensions as labels (`topic`,
`event_subscription_name`, `dead_letter_reason`, `drop_reason`, `error_type`). They are computed
from the durable outbox at scrape time, so they survive restarts and cost nothing on the hot path.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

# Seconds from publish to successful delivery (on callgrid's clock).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 3600, 21600, 86400)
# Milliseconds a destination took to answer one attempt (real time).
DURATION_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in sorted(samples):
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, bounds: tuple[float, ...], observations: dict[Labels, list[float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, values in sorted(observations.items()):
            values.sort()
            for bound in bounds:
                count = bisect.bisect_right(values, bound)
                self.lines.append(f"{name}_bucket{_labels((*labels, ('le', _number(bound))))} {count}")
            self.lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {len(values)}")
            self.lines.append(f"{name}_sum{_labels(labels)} {_number(round(sum(values), 6))}")
            self.lines.append(f"{name}_count{_labels(labels)} {len(values)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(snapshot: dict[str, list[tuple[Any, ...]]], names: dict[str, str]) -> str:
    """Exposition text from `StoreTx.delivery_metrics()`; `names` maps subscription ids to names."""

    def sub(topic: str, subscription_id: str | None) -> Labels:
        sid = subscription_id or ""
        name = names.get(sid) or sid.rstrip("/").rsplit("/", 1)[-1]
        return (("topic", topic), ("event_subscription_name", name.upper()))

    out = _Exposition()
    out.family(
        "eventgrid_publish_success_count",
        "counter",
        "Events published to the topic (PublishSuccessCount).",
        [((("topic", t),), n) for t, n in snapshot["published"]],
    )
    out.family(
        "eventgrid_unmatched_event_count",
        "counter",
        "Events that matched no subscription (UnmatchedEventCount).",
        [((("topic", t),), n) for t, n in snapshot["unmatched"]],
    )
    matched: Counter[Labels] = Counter()
    delivered: Counter[Labels] = Counter()
    dead: Counter[Labels] = Counter()
    dropped: Counter[Labels] = Counter()
    for topic, sid, status, reason, n in snapshot["deliveries"]:
        labels = sub(topic, sid)
        matched[labels] += n
        if status == "delivered":
            delivered[labels] += n
        elif status == "deadLettered":
            dead[(*labels, ("dead_letter_reason", reason or ""))] += n
        elif status == "dropped":
            dropped[(*labels, ("drop_reason", reason or ""))] += n
    failed: Counter[Labels] = Counter()
    durations: dict[Labels, list[float]] = defaultdict(list)
    for topic, sid, outcome, status, duration_ms in snapshot["attempts"]:
        labels = sub(topic, sid)
        durations[labels].append(float(duration_ms))
        if not (status is not None and 200 <= status <= 204):
            failed[(*labels, ("error_type", outcome))] += 1
    latency: dict[Labels, list[float]] = defaultdict(list)
    for topic, sid, seconds in snapshot["delivered_latency"]:
        latency[sub(topic, sid)].append(max(0.0, float(seconds or 0.0)))
    out.family("eventgrid_matched_event_count", "counter", "Events matched (MatchedEventCount).", matched.items())
    out.family(
        "eventgrid_delivery_success_count", "counter", "Events delivered (DeliverySuccessCount).", delivered.items()
    )
    out.family(
        "eventgrid_delivery_attempt_fail_count",
        "counter",
        "Failed delivery attempts, per event (DeliveryAttemptFailCount).",
        failed.items(),
    )
    out.family("eventgrid_dead_lettered_count", "counter", "Events dead-lettered (DeadLetteredCount).", dead.items())
    out.family("eventgrid_dropped_event_count", "counter", "Events dropped (DroppedEventCount).", dropped.items())
    out.histogram(
        "eventgrid_destination_processing_duration_ms",
        "How long the destination took to answer an attempt, in ms (DestinationProcessingDurationInMs).",
        DURATION_BUCKETS_MS,
        durations,
    )
    out.histogram(
        "eventgrid_delivery_latency_seconds",
        "Time from publish to successful delivery, on callgrid's clock.",
        LATENCY_BUCKETS,
        latency,
    )
    return out.text()
