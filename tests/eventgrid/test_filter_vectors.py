"""eventgrid.md 3.8 test vectors through the public surface: a custom topic, a subscription with the
vector's filter, a publish with azure-eventgrid, then delivery or no delivery. A control subscription
without filter on the same topic proves the publish went through before non-delivery is judged."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridPublisherClient

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.rest import headers, put, topic_id, topic_subscription_url, wait_state, webhook_properties

E1: dict[str, Any] = {
    "id": "ic-1",
    "subject": "/caller/4:+14255550100/recipient/4:+18005551212",
    "eventType": "Microsoft.Communication.IncomingCall",
    "eventTime": "2024-05-01T10:00:00.0000000Z",
    "dataVersion": "1.0",
    "metadataVersion": "1",
    "data": {
        "to": {"kind": "phoneNumber", "rawId": "4:+18005551212", "phoneNumber": {"value": "+18005551212"}},
        "from": {"kind": "phoneNumber", "rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550100"}},
        "serverCallId": "srv-1",
        "callerDisplayName": "",
        "incomingCallContext": "ctx",
        "correlationId": "c-1",
        "customContext": {"sipHeaders": {"x-ms-client": "a"}, "voipHeaders": {}},
    },
}
E2: dict[str, Any] = {
    "id": "e2",
    "subject": "/orders/42",
    "eventType": "Contoso.Order.Created",
    "eventTime": "2024-05-01T10:00:00Z",
    "dataVersion": "2.0",
    "metadataVersion": "1",
    "data": {
        "amount": 150.5,
        "count": 3,
        "priority": "High",
        "isVip": True,
        "zero": 0,
        "numStr": "5",
        "tags": ["Red", "green"],
        "scores": [10, 20, 30],
        "mixed": [5, "7", True],
        "items": [{"sku": "a"}],
        "nested": {"level2": {"level3": {"x": "deep"}}},
        "nothing": None,
    },
}


def adv(op: str, key: str, values: Any = None, *, value: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"operatorType": op, "key": key}
    if values is not None:
        spec["values"] = values
    if value is not None:
        spec["value"] = value
    return spec


def advanced(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"advancedFilters": list(filters)}


VECTORS: list[tuple[int, dict[str, Any], dict[str, Any], bool]] = [
    (1, E1, advanced(adv("StringBeginsWith", "data.to.PhoneNumber.Value", ["+18005551212"])), True),
    (2, E1, advanced(adv("StringIn", "data.to.kind", ["PHONENUMBER"])), True),
    (3, E1, advanced(adv("StringIn", "eventType", ["microsoft.communication.incomingcall"])), True),
    (4, E1, advanced(adv("StringContains", "subject", ["recipient/4:+1800"])), True),
    (5, E1, advanced(adv("StringBeginsWith", "data.to.rawId", ["8:acs:"])), False),
    (6, E1, advanced(adv("StringNotBeginsWith", "data.from.rawId", ["4:+1425"])), False),
    (7, E1, advanced(adv("StringEndsWith", "subject", ["0000", "5551212"])), True),
    (
        8,
        E1,
        advanced(
            adv("StringBeginsWith", "data.to.rawId", ["4:"]), adv("StringIn", "data.from.kind", ["communicationUser"])
        ),
        False,
    ),
    (9, E1, advanced(adv("IsNotNull", "data.customContext")), True),
    (10, E1, advanced(adv("IsNullOrUndefined", "data.onBehalfOfCallee")), True),
    (11, E1, advanced(adv("StringIn", "data.customContext.sipHeaders.X-MS-CLIENT", ["A"])), True),
    (12, E1, advanced(adv("StringBeginsWith", "topic", ["/subscriptions/s1/resourceGroups/RG1"])), True),
    (13, E2, advanced(adv("NumberGreaterThan", "data.amount", value=150)), True),
    (14, E2, advanced(adv("NumberGreaterThan", "data.amount", value=150.5)), False),
    (15, E2, advanced(adv("NumberGreaterThanOrEquals", "data.amount", value=150.5)), True),
    (16, E2, advanced(adv("NumberLessThan", "data.count", value=3)), False),
    (17, E2, advanced(adv("NumberLessThanOrEquals", "data.count", value=3)), True),
    (18, E2, advanced(adv("NumberIn", "data.count", [1, 3])), True),
    (19, E2, advanced(adv("NumberIn", "data.count", [4])), False),
    (20, E2, advanced(adv("NumberNotIn", "data.count", [4, 5])), True),
    (21, E2, advanced(adv("NumberNotIn", "data.count", [3])), False),
    (22, E2, advanced(adv("NumberInRange", "data.amount", [[100, 150.5]])), True),
    (23, E2, advanced(adv("NumberInRange", "data.amount", [[0, 100], [200, 300]])), False),
    (24, E2, advanced(adv("NumberNotInRange", "data.amount", [[0, 100]])), True),
    (25, E2, advanced(adv("NumberNotInRange", "data.amount", [[150.5, 151]])), False),
    (26, E2, advanced(adv("BoolEquals", "data.isVip", value=True)), True),
    (27, E2, advanced({"operatorType": "BoolEquals", "key": "data.isVip", "value": False}), False),
    (28, E2, advanced(adv("StringIn", "data.priority", ["high"])), True),
    (29, E2, advanced(adv("StringNotIn", "data.priority", ["low", "medium"])), True),
    (30, E2, advanced(adv("StringContains", "data.priority", ["IG"])), True),
    (31, E2, advanced(adv("StringNotContains", "data.priority", ["ig"])), False),
    (32, E2, advanced(adv("StringNotEndsWith", "data.priority", ["GH"])), False),
    (33, E2, advanced(adv("NumberGreaterThan", "data.missing", value=0)), False),
    (34, E2, advanced(adv("NumberNotIn", "data.missing", [1])), True),
    (35, E2, advanced(adv("StringNotIn", "data.missing", ["x"])), True),
    (36, E2, advanced(adv("StringNotContains", "data.missing", ["x"])), False),
    (37, E2, advanced(adv("StringNotBeginsWith", "data.missing", ["x"])), False),
    (38, E2, advanced(adv("NumberNotInRange", "data.missing", [[0, 1]])), True),
    (39, E2, advanced(adv("IsNullOrUndefined", "data.missing")), True),
    (40, E2, advanced(adv("IsNotNull", "data.missing")), False),
    (71, E2, {"subjectBeginsWith": "/ORDERS", "isSubjectCaseSensitive": False}, True),
    (72, E2, {"subjectBeginsWith": "/ORDERS", "isSubjectCaseSensitive": True}, False),
    (73, E2, {"subjectBeginsWith": "/orders", "subjectEndsWith": "/43"}, False),
    (74, E2, {"includedEventTypes": ["Contoso.Order.Created"]}, True),
    (75, E2, {"includedEventTypes": ["Contoso.Order.Deleted"]}, False),
    (76, E2, {}, True),
    (
        77,
        E2,
        {"includedEventTypes": ["Contoso.Order.Created"], **advanced(adv("NumberLessThan", "data.amount", value=1))},
        False,
    ),
]


def _topic_for(server: CallgridServer, event: dict[str, Any]) -> tuple[str, str, str]:
    """(name, id, key) of a custom topic; E1's lives in subscription s1, group rg1, as in the spec."""
    name = "e1-topic" if event is E1 else "e2-topic"
    full_id = topic_id(name, "s1", "rg1") if event is E1 else topic_id(name)
    url = f"{server.endpoint}{full_id}?api-version=2025-02-15"
    response = requests.put(url, json={"location": "westus"}, headers=headers(server))
    assert response.status_code == 201, response.text
    keys = requests.post(f"{server.endpoint}{full_id}/listKeys?api-version=2025-02-15", headers=headers(server))
    return name, full_id, keys.json()["key1"]


@pytest.mark.parametrize(("number", "event", "spec", "expected"), VECTORS, ids=[f"v{v[0]}" for v in VECTORS])
def test_vector(
    fresh: CallgridServer,
    webhook: WebhookReceiver,
    number: int,
    event: dict[str, Any],
    spec: dict[str, Any],
    expected: bool,
) -> None:
    topic, full_id, key = _topic_for(fresh, event)
    for name, path, filter_spec in (("control", "/control", {}), ("vector", "/vector", spec)):
        url = topic_subscription_url(fresh, full_id, name)
        response = put(fresh, url, webhook_properties(webhook.url + path, filter=filter_spec))
        assert response.status_code == 201, response.text
        assert wait_state(fresh, url)["properties"]["provisioningState"] == "Succeeded"
    client = EventGridPublisherClient(f"{fresh.endpoint}/eventgrid/topics/{topic}/api/events", AzureKeyCredential(key))
    client.send([dict(event)])

    def arrived(path: str) -> list[Any]:
        return [r for r in webhook.received if r.path == path and r.header("aeg-event-type") == "Notification"]

    webhook.wait_until(lambda: arrived("/control"))
    if expected:
        webhook.wait_until(lambda: arrived("/vector"))
    else:
        deliveries = fresh.client().request(
            "GET",
            "/callgrid/v1/deliveries?subscriptionId=" + quote(full_id.lower() + "/eventsubscriptions/vector", safe=""),
        )
        assert deliveries["value"] == [] and arrived("/vector") == []
