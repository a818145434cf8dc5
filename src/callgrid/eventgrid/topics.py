"""Topics: where events enter Event Grid. Publishing matches subscriptions and queues deliveries.

The matching index (index.py) is built from the store and kept in memory; any change to
subscriptions marks it stale and it is rebuilt on the next publish. Rebuilding reuses every
compiled filter whose subscription did not change, so a change costs a scan, not 100,000 compiles.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from callgrid.clock import Clock
from callgrid.eventgrid.delivery.metrics import MetricCounts
from callgrid.eventgrid.events import event_grid_event, filter_view
from callgrid.eventgrid.index import SubscriptionIndex
from callgrid.eventgrid.subscriptions import ActiveSubscription, active_subscription
from callgrid.store import DeliveryRow, StoreTx


def _version(doc: dict[str, Any]) -> tuple[Any, ...]:
    # Every PUT/PATCH makes a new operation id; validation moves provisioningState.
    return (doc["callgrid"].get("operationId"), doc["properties"].get("provisioningState"))


class SubscriptionTable:
    def __init__(self) -> None:
        self._index: SubscriptionIndex | None = None
        self._compiled: dict[str, tuple[tuple[Any, ...], ActiveSubscription | None]] = {}

    def invalidate(self) -> None:
        self._index = None

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
        self, tx: StoreTx, topic: str, event: dict[str, Any], now: float | None = None
    ) -> list[ActiveSubscription]:
        """Subscriptions listening to `topic` (an event source id) whose filters pass `event` (EG shape)."""
        return (await self.index(tx)).match(topic.lower(), event, now)


class EventPublisher:
    """Writes events and their deliveries into the outbox, inside the caller's transaction."""

    def __init__(self, clock: Clock, table: SubscriptionTable, on_enqueued: Any = None) -> None:
        self._clock = clock
        self._table = table
        self._on_enqueued = on_enqueued

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
        Metrics go to `counts` when the caller writes many events' counts at once, else straight to `tx`.
        """
        now = self._clock.now()
        subs = await self._table.matching(tx, topic_source, filter_view(event), now)
        local = counts if counts is not None else MetricCounts()
        local.published(topic_source, (s.id for s in subs))
        if counts is None:
            await tx.add_metric_counts(local.rows())
        if not subs:
            return []
        key = storage_id or event["id"]
        await tx.add_event(key, topic_source, json.dumps(event, separators=(",", ":")), now)
        for sub in subs:
            await tx.add_delivery(
                DeliveryRow(
                    id=str(uuid.uuid4()),
                    kind="eventgrid",
                    event_id=key,
                    url=sub.endpoint_url,
                    subscription_id=sub.id,
                    created_at=now,
                    next_attempt_at=now,
                    max_attempts=sub.max_delivery_attempts,
                    expires_at=now + sub.event_ttl_minutes * 60,
                )
            )
        if subs and self._on_enqueued is not None:
            self._on_enqueued()
        return [s.id for s in subs]

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
        await tx.add_event(event["id"], event["source"], json.dumps(event, separators=(",", ":")), now)
        await tx.add_delivery(
            DeliveryRow(
                id=str(uuid.uuid4()),
                kind="callback",
                event_id=event["id"],
                url=url,
                created_at=now,
                next_attempt_at=now,
                max_attempts=max_attempts,
                expires_at=now + ttl_seconds,
                audience=audience,
            )
        )
        if self._on_enqueued is not None:
            self._on_enqueued()
