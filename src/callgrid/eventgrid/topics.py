"""Topics: where events enter Event Grid. Publishing matches subscriptions and queues deliveries.

The matching table is built from the store and kept in memory; any change to subscriptions marks
it stale and it is rebuilt on the next publish.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from callgrid.clock import Clock
from callgrid.eventgrid.events import event_grid_event
from callgrid.eventgrid.subscriptions import ActiveSubscription, active_subscription
from callgrid.store import DeliveryRow, StoreTx


class SubscriptionTable:
    def __init__(self) -> None:
        self._subs: list[ActiveSubscription] | None = None

    def invalidate(self) -> None:
        self._subs = None

    async def active(self, tx: StoreTx) -> list[ActiveSubscription]:
        if self._subs is None:
            subs = []
            for doc in await tx.list_subscriptions():
                active = active_subscription(doc)
                if active is not None:
                    subs.append(active)
            self._subs = subs
        return self._subs

    async def matching(self, tx: StoreTx, topic: str, event: dict[str, Any]) -> list[ActiveSubscription]:
        topic = topic.lower()
        return [s for s in await self.active(tx) if s.topic.lower() == topic and s.filter.matches(event)]


class EventPublisher:
    """Writes events and their deliveries into the outbox, inside the caller's transaction."""

    def __init__(self, clock: Clock, table: SubscriptionTable, on_enqueued: Any = None) -> None:
        self._clock = clock
        self._table = table
        self._on_enqueued = on_enqueued

    async def publish(self, tx: StoreTx, topic_source: str, event: dict[str, Any]) -> list[str]:
        """Queue one Event Grid-schema event for every matching subscription of `topic_source`."""
        now = self._clock.now()
        subs = await self._table.matching(tx, topic_source, event)
        await tx.add_event(event["id"], topic_source, json.dumps(event, separators=(",", ":")), now)
        for sub in subs:
            await tx.add_delivery(
                DeliveryRow(
                    id=str(uuid.uuid4()),
                    kind="eventgrid",
                    event_id=event["id"],
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
        self, tx: StoreTx, *, url: str, event: dict[str, Any], max_attempts: int = 5, ttl_seconds: float = 600
    ) -> None:
        """Queue a Call Automation callback: delivered by the same engine, signed at send time."""
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
            )
        )
        if self._on_enqueued is not None:
            self._on_enqueued()
