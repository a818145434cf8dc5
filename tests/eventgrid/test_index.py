"""The subscription index answers exactly as asking every subscription's filter would."""

from __future__ import annotations

import random
from typing import Any

from callgrid.eventgrid.events import FilterViews, to_cloud_event
from callgrid.eventgrid.filters import compile_filter
from callgrid.eventgrid.index import SubscriptionIndex
from callgrid.eventgrid.subscriptions import ActiveSubscription

TOPICS = ("/t/a", "/t/b")
TYPES = ("Order.Created", "order.deleted", "Call.Incoming")
PHONES = ("+1800", "+1801", "+1802", "+1803")


def sub(
    i: int, topic: str, spec: dict[str, Any], expires_at: float | None = None, *, cloud_events: bool = False
) -> ActiveSubscription:
    return ActiveSubscription(
        id=f"{topic}/s{i}",
        name=f"s{i}",
        topic=topic,
        source=topic,
        filter=compile_filter(spec, cloud_events=cloud_events),
        endpoint_url="http://127.0.0.1:9",
        delivery_schema="CloudEventSchemaV1_0" if cloud_events else "EventGridSchema",
        max_delivery_attempts=30,
        event_ttl_minutes=1440,
        expires_at=expires_at,
        doc={},
    )


def random_spec(rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if rng.random() < 0.5:
        spec["includedEventTypes"] = rng.sample(TYPES, rng.randint(0, 2))
    filters = []
    for _ in range(rng.randint(0, 2)):
        key = rng.choice(("data.to.PhoneNumber.Value", "data.kind", "subject"))
        op = rng.choice(("StringIn", "StringIn", "StringNotIn", "StringBeginsWith"))
        filters.append({"operatorType": op, "key": key, "values": rng.sample((*PHONES, "Pstn", "/x"), 2)})
    if filters:
        spec["advancedFilters"] = filters
        spec["enableAdvancedFilteringOnArrays"] = rng.random() < 0.3
    return spec


def random_event(rng: random.Random) -> dict[str, Any]:
    phone: Any = rng.choice(PHONES).upper() if rng.random() < 0.8 else [rng.choice(PHONES), "+1999"]
    return {
        "id": "e",
        "subject": rng.choice(("/x", "/y")),
        "eventType": rng.choice(TYPES).upper(),
        "data": {"to": {"phoneNumber": {"value": phone}}, "kind": rng.choice(("pstn", "acs"))},
    }


def test_index_agrees_with_a_linear_scan() -> None:
    rng = random.Random(3)
    subs = [sub(i, rng.choice(TOPICS), random_spec(rng)) for i in range(400)]
    index = SubscriptionIndex(subs)
    for _ in range(500):
        event = random_event(rng)
        topic = rng.choice(TOPICS)
        expected = sorted(s.id for s in subs if s.source == topic and s.filter.matches(event))
        assert sorted(s.id for s in index.match(topic, event)) == expected


def test_expired_subscriptions_never_match() -> None:
    index = SubscriptionIndex([sub(1, "/t/a", {}, expires_at=100.0), sub(2, "/t/a", {})])
    assert [s.name for s in index.match("/t/a", {"eventType": "x"}, now=100.0)] == ["s2"]
    assert [s.name for s in index.match("/t/a", {"eventType": "x"}, now=99.0)] == ["s1", "s2"]


def test_cloud_events_subscriptions_are_asked_about_the_cloud_event() -> None:
    rng = random.Random(5)
    subs = []
    for i in range(300):
        spec = random_spec(rng)
        cloud_events = rng.random() < 0.5
        if cloud_events and rng.random() < 0.5:
            # The CloudEvent's names: `type` and `source` are keys; `eventType` and `topic` are not.
            key = rng.choice(("type", "eventType", "source", "topic"))
            spec.setdefault("advancedFilters", []).append(
                {"operatorType": rng.choice(("StringIn", "IsNullOrUndefined")), "key": key, "values": [*TYPES, *TOPICS]}
            )
        subs.append(sub(i, rng.choice(TOPICS), spec, cloud_events=cloud_events))
    index = SubscriptionIndex(subs)
    for _ in range(300):
        topic = rng.choice(TOPICS)
        event = {**random_event(rng), "topic": topic, "eventTime": "2026-11-29T05:00:00Z", "dataVersion": "1.0"}
        cloud = to_cloud_event(event)
        expected = sorted(
            s.id for s in subs if s.source == topic and s.filter.matches(cloud if s.filter.cloud_events else event)
        )
        assert sorted(s.id for s in index.match(topic, FilterViews(event))) == expected
