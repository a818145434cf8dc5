"""Topics: where events enter Event Grid. Publishing matches subscriptions and queues deliveries.

The matching index (index.py) is built from the store and kept in memory; any change to
subscriptions marks it stale and it is rebuilt on the next publish. Rebuilding reuses every
compiled filter whose subscription did not change, so a change costs a scan, not 100,000 compiles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from callgrid import jsonio
from callgrid.clock import Clock, iso7
from callgrid.eventgrid.delivery.metrics import MetricCounts, MetricsBuffer
from callgrid.eventgrid.events import FilterViews, event_grid_event
from callgrid.eventgrid.filters import Refusal
from callgrid.eventgrid.index import SubscriptionIndex
from callgrid.eventgrid.subscriptions import CLOUD_EVENT_SCHEMA, ActiveSubscription, active_subscription
from callgrid.store import DeliveryRow, StoreTx
from callgrid.store.keys import ordered_uuid


def _version(doc: dict[str, Any]) -> tuple[Any, ...]:
    # Every PUT/PATCH makes a new operation id; validation moves provisioningState.
    return (doc["callgrid"].get("operationId"), doc["properties"].get("provisioningState"))


@dataclass(frozen=True)
class Verdict:
    """What one subscription of a topic makes of one event: matched, or the reason it did not."""

    subscription_id: str
    name: str
    matched: bool
    reason: str | None = None  # why not, in words
    refusal: Refusal | None = None  # the filter part that said no, when it was the filter


class SubscriptionTable:
    def __init__(self) -> None:
        self._index: SubscriptionIndex | None = None
        self._compiled: dict[str, tuple[tuple[Any, ...], ActiveSubscription | None]] = {}
        self.version = 0  # moves on every change of the subscriptions: readers may cache until it does

    def invalidate(self) -> None:
        self._index = None
        self.version += 1

    def unchanged_since(self, version: int) -> bool:
        return self.version == version

    async def index(self, tx: StoreTx) -> SubscriptionIndex:
        if self._index is None:
            compiled: dict[str, tuple[tuple[Any, ...], ActiveSubscription | None]] = {}
            for doc in await tx.list_subscriptions():
                key = doc["id"].lower()
                version = _version(doc)
                cached = self._compiled.get(key)
                compiled[key] = (
                    cached if cached is not None and cached[0] == version else (version, active_subscription(doc))
                )
            self._compiled = compiled
            self._index = SubscriptionIndex(sub for _, sub in compiled.values() if sub is not None)
        return self._index

    async def active(self, tx: StoreTx) -> list[ActiveSubscription]:
        await self.index(tx)
        return [sub for _, sub in self._compiled.values() if sub is not None]

    async def matching(
        self, tx: StoreTx, topic: str, event: dict[str, Any] | FilterViews, now: float | None = None
    ) -> list[ActiveSubscription]:
        """Subscriptions listening to `topic` (an event source id) whose filters pass `event`, each in the
        schema it receives."""
        return (await self.index(tx)).match(topic.lower(), event, now)

    async def explain(
        self, tx: StoreTx, topic: str, event: dict[str, Any], now: float, *, limit: int = 100, dataschema: bool = True
    ) -> list[Verdict]:
        """Subscriptions of `topic` and their verdicts on `event` as published (either schema), as
        `matching` would decide it now: for people asking why an event did not reach them. At most
        `limit` verdicts (matches first), so a topic with thousands of subscriptions stays cheap to ask."""
        await self.index(tx)
        source = topic.lower()
        views = FilterViews(event, dataschema=dataschema)
        matched = {s.id for s in (await self.index(tx)).match(source, views, now)}
        verdicts = [Verdict(key, sub.name, True) for key, (_, sub) in self._compiled.items() if key in matched and sub]
        for key, (_, sub) in self._compiled.items():
            if len(verdicts) >= limit:
                break
            if key in matched:
                continue
            if sub is None:
                doc = await tx.get_subscription(key)
                if doc is None or str(doc.get("callgrid", {}).get("source") or doc["properties"]["topic"]).lower() != (
                    source
                ):
                    continue
                state = doc["properties"].get("provisioningState")
                verdicts.append(Verdict(key, doc["name"], False, f"not active: its provisioningState is {state}"))
                continue
            if sub.source != source:
                continue
            if sub.expires_at is not None and now >= sub.expires_at:
                verdicts.append(Verdict(key, sub.name, False, f"expired at {iso7(sub.expires_at)}"))
                continue
            refusal = sub.filter.explain(views.view(sub.delivery_schema == CLOUD_EVENT_SCHEMA))
            if refusal is None:  # the index and the filter agree (tests/eventgrid/test_index.py): not reached
                verdicts.append(Verdict(key, sub.name, True))
            else:
                verdicts.append(Verdict(key, sub.name, False, f"{refusal.where}: {refusal.reason}", refusal))
        return sorted(verdicts[:limit], key=lambda v: (not v.matched, v.name.lower()))


class Handoff(Protocol):
    """This node's delivery engine, as the publisher sees it (delivery/engine.py): rows it may lease to the
    engine as they are written, and hand over once their transaction commits."""

    def lease_for_handoff(self, now: float) -> tuple[float, str] | None: ...

    def hand_over(
        self, rows: list[tuple[DeliveryRow, str, dict[str, Any] | None]], current: Callable[[], bool] | None
    ) -> None: ...


class EventPublisher:
    """Writes events and their deliveries into the outbox, inside the caller's transaction."""

    def __init__(
        self,
        clock: Clock,
        table: SubscriptionTable,
        on_enqueued: Any = None,
        *,
        cloud_event_dataschema: bool = True,
        engine: Handoff | None = None,
    ) -> None:
        self._clock = clock
        self._table = table
        self._on_enqueued = on_enqueued
        # This node's engine, running: rows go in leased to it and are handed over once `tx` commits, so it
        # sends them without a transaction of its own to claim them (delivery/engine.py).
        self._engine = engine
        # As the delivery engine writes CloudEvents: a CloudEvents subscription filters what it is sent.
        self._dataschema = cloud_event_dataschema
        # Told of every event once its transaction commits, matched or not (the console's live view):
        # (kind "event" or "callback", topic source or callback URL, the event, ids of matched subscriptions).
        self.observers: list[Callable[[str, str, dict[str, Any], list[str]], None]] = []
        # Where counts of events published without a `counts` of the caller's wait to be written.
        self.metrics: MetricsBuffer | None = None

    def _observe(self, tx: StoreTx, kind: str, where: str, event: dict[str, Any], matched: list[str]) -> None:
        for observer in self.observers:
            tx.after_commit(functools.partial(observer, kind, where, event, matched))

    async def publish(
        self,
        tx: StoreTx,
        topic_source: str,
        event: dict[str, Any],
        *,
        storage_id: str | None = None,
        counts: MetricCounts | None = None,
    ) -> list[str]:
        """Queue one event for every matching subscription of `topic_source`.

        `event` is kept as published (Event Grid schema, or a CloudEvent from a CloudEvents topic);
        the delivery engine converts it to each subscription's schema at send time. `storage_id` is
        the outbox key when the event's own id need not be unique (publishers choose custom topic ids).
        An event no subscription wants is only counted (UnmatchedEventCount): nothing would read it.
        Metrics go to `counts` when the caller writes many events' counts at once, else to the buffer once
        `tx` commits (written with a later transaction of the delivery engine's), or straight to `tx`.
        """
        now = self._clock.now()
        views = FilterViews(event, dataschema=self._dataschema)
        subs = await self._table.matching(tx, topic_source, views, now)
        local = counts if counts is not None else MetricCounts()
        local.published(topic_source, (s.id for s in subs))
        if counts is None:
            if self.metrics is not None:
                tx.after_commit(functools.partial(self.metrics.add, local))
            else:
                await tx.add_metric_counts(local.rows())
        if self.observers:
            self._observe(tx, "event", topic_source, event, [s.id for s in subs])
        if not subs:
            return []
        key = storage_id or event["id"]
        stored = jsonio.dumps(event)
        await tx.add_event(key, topic_source, stored, now)
        lease, owner = self._lease(now)
        handed: list[tuple[DeliveryRow, str, dict[str, Any] | None]] = []
        for sub in subs:
            row = DeliveryRow(
                id=ordered_uuid(),
                kind="eventgrid",
                event_id=key,
                url=sub.endpoint_url,
                subscription_id=sub.id,
                created_at=now,
                next_attempt_at=now,
                max_attempts=sub.max_delivery_attempts,
                expires_at=now + sub.event_ttl_minutes * 60,
                lease_until=lease,
            )
            await tx.add_delivery(row, owner)
            handed.append((row, stored, sub.doc))
        self._enqueued(tx, handed, functools.partial(self._table.unchanged_since, self._table.version))
        return [s.id for s in subs]

    def _lease(self, now: float) -> tuple[float | None, str]:
        """The lease new rows go in with, and its owner: (None, "") when they are to be claimed."""
        leased = None if self._engine is None else self._engine.lease_for_handoff(now)
        return (None, "") if leased is None else leased

    def _enqueued(
        self,
        tx: StoreTx,
        rows: list[tuple[DeliveryRow, str, dict[str, Any] | None]],
        current: Callable[[], bool] | None,
    ) -> None:
        """Rows were added: hand leased ones to the engine once `tx` commits, or wake it to claim them."""
        if not rows:
            return
        if rows[0][0].lease_until is not None and self._engine is not None:
            tx.after_commit(functools.partial(self._engine.hand_over, rows, current))
        elif self._on_enqueued is not None:
            self._on_enqueued()

    async def publish_system_event(
        self,
        tx: StoreTx,
        *,
        topic: str,
        event_type: str,
        subject: str,
        data: dict[str, Any],
        data_version: str = "1.0",
    ) -> str:
        event = event_grid_event(
            topic=topic,
            event_type=event_type,
            subject=subject,
            data=data,
            data_version=data_version,
            now=self._clock.now(),
        )
        await self.publish(tx, topic, event)
        return str(event["id"])

    async def send_callback(
        self,
        tx: StoreTx,
        *,
        url: str,
        event: dict[str, Any],
        audience: str | None = None,
        max_attempts: int = 5,
        ttl_seconds: float = 600,
    ) -> None:
        """Queue a Call Automation callback: delivered by the same engine, signed at send time with a JWT
        for `audience` (the immutable id of the call's resource)."""
        now = self._clock.now()
        if self.observers:
            self._observe(tx, "callback", url, event, [])
        stored = jsonio.dumps(event)
        await tx.add_event(event["id"], event["source"], stored, now)
        lease, owner = self._lease(now)
        row = DeliveryRow(
            id=ordered_uuid(),
            kind="callback",
            event_id=event["id"],
            url=url,
            created_at=now,
            next_attempt_at=now,
            max_attempts=max_attempts,
            expires_at=now + ttl_seconds,
            lease_until=lease,
            audience=audience,
        )
        await tx.add_delivery(row, owner)
        self._enqueued(tx, [(row, stored, None)], None)
