"""`SubscriptionTable.explain`: every subscription of a topic and its verdict on one event, as publishing
would decide it: matched, refused by a named filter part, not active, expired, or another topic's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callgrid.clock import VirtualClock
from callgrid.eventgrid.events import event_grid_event
from callgrid.eventgrid.subscriptions import SubscriptionService
from callgrid.eventgrid.topics import SubscriptionTable
from callgrid.store import open_store

TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Communication/CommunicationServices/acs"
OTHER_TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/orders"


def _body(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    destination = {"endpointType": "WebHook", "properties": {"endpointUrl": "https://127.0.0.1:9/hook"}}
    return {"properties": {"destination": destination, "filter": spec, **extra}}


async def test_each_subscription_says_why(tmp_path: Path) -> None:
    clock = VirtualClock(1_800_000_000.0)
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    service = SubscriptionService(clock)
    table = SubscriptionTable()
    to_number = {"operatorType": "StringIn", "key": "data.to.phoneNumber.value", "values": ["+18005550000"]}
    subscriptions = {
        "wants-it": (TOPIC, {"includedEventTypes": ["Microsoft.Communication.IncomingCall"]}, "Succeeded", {}),
        "other-number": (TOPIC, {"advancedFilters": [to_number]}, "Succeeded", {}),
        "not-validated": (TOPIC, {}, "AwaitingManualAction", {}),
        "expired": (TOPIC, {}, "Succeeded", {"expirationTimeUtc": "2028-01-01T00:00:00Z"}),
        "elsewhere": (OTHER_TOPIC, {}, "Succeeded", {}),
    }
    async with store.transaction() as tx:
        for name, (topic, spec, state, extra) in subscriptions.items():
            doc, _ = await service.put(
                tx,
                arm_id=f"{topic}/providers/Microsoft.EventGrid/eventSubscriptions/{name}",
                name=name,
                topic=topic,
                resource_type="Microsoft.EventGrid/eventSubscriptions",
                body=_body(spec, **extra),
            )
            doc["properties"]["provisioningState"] = state
            await tx.put_subscription(doc["id"].lower(), doc)
    event = event_grid_event(
        topic=TOPIC,
        event_type="Microsoft.Communication.IncomingCall",
        subject="/phoneCall/caller/+14255550100/recipient/+18005551212",
        data={"to": {"kind": "phoneNumber", "rawId": "4:+18005551212", "phoneNumber": {"value": "+18005551212"}}},
        data_version="1.0",
        now=clock.now(),
    )
    async with store.transaction() as tx:
        # Later than the expiry: that subscription no longer receives anything.
        verdicts = {v.name: v for v in await table.explain(tx, TOPIC, event, 1_900_000_000.0)}
        matching = {s.name for s in await table.matching(tx, TOPIC, event, 1_900_000_000.0)}
    await store.close()

    assert set(verdicts) == {"wants-it", "other-number", "not-validated", "expired"}
    assert {name for name, v in verdicts.items() if v.matched} == matching == {"wants-it"}
    refused = verdicts["other-number"]
    assert refused.refusal is not None and refused.refusal.where == "advancedFilters[0]"
    assert refused.reason == (
        "advancedFilters[0]: StringIn on 'data.to.phoneNumber.value' [\"+18005550000\"]: "
        "'data.to.phoneNumber.value' is \"+18005551212\""
    )
    assert verdicts["not-validated"].reason == "not active: its provisioningState is AwaitingManualAction"
    assert verdicts["expired"].reason == "expired at 2028-01-01T00:00:00.0000000Z"
