"""What a webhook receives: schemas and content types (eventgrid.md 1.2, 4.3) and delivery attribute headers."""

from __future__ import annotations

import requests
from azure.core.messaging import CloudEvent

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.delivery.helpers import raise_incoming_calls, settled
from tests.support.arm import arm_headers, put_subscription, subscription_url

INCOMING_CALL = "Microsoft.Communication.IncomingCall"


def _webhook(url: str, **extra: object) -> dict[str, object]:
    return {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": url, **extra}}}


def test_cloud_events_unbatched_are_single_objects(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "ce-app", webhook.url, properties={"eventDeliverySchema": "CloudEventSchemaV1_0"})
    (call_id,) = raise_incoming_calls(fresh)
    settled(fresh)
    (post,) = webhook.notifications()
    assert post.header("Content-Type") == "application/cloudevents+json; charset=utf-8"
    assert post.header("aeg-delivery-count") == "0"
    assert post.header("aeg-metadata-version") == "1.0"
    assert post.header("WebHook-Request-Origin") == "eventgrid.azure.net"
    assert isinstance(post.body, dict)
    event = CloudEvent.from_dict(post.body)
    assert event.specversion == "1.0"
    assert event.type == INCOMING_CALL
    assert event.source == fresh.resource_id.lower()
    assert event.data["serverCallId"] == call_id
    assert post.body["dataschema"] == "#1.0"
    assert "eventType" not in post.body and "topic" not in post.body


def test_cloud_events_batched_are_arrays(quiet: CallgridServer, webhook: WebhookReceiver) -> None:
    props = {"eventDeliverySchema": "CloudEventSchemaV1_0", **_webhook(webhook.url, maxEventsPerBatch=5)}
    put_subscription(quiet, "ce-batch-app", webhook.url, properties=props)
    webhook.responder = lambda item: (500, None) if item.header("aeg-delivery-count") == "0" else (200, None)
    raise_incoming_calls(quiet, 3)
    settled(quiet)
    quiet.advance(12)
    settled(quiet)
    (post,) = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "1"]
    assert post.header("Content-Type") == "application/cloudevents-batch+json; charset=utf-8"
    assert isinstance(post.body, list) and len(post.body) == 3
    assert [CloudEvent.from_dict(e).type for e in post.body] == [INCOMING_CALL] * 3
    first = next(r for r in webhook.notifications() if r.header("aeg-delivery-count") == "0")
    assert isinstance(first.body, list)  # batching on: an array even with one event


def test_event_grid_schema_headers(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "Mixed-Case-App", webhook.url + "/hook?code=abc")
    raise_incoming_calls(fresh)
    settled(fresh)
    (post,) = webhook.notifications()
    assert post.path == "/hook?code=abc"
    assert post.header("Content-Type") == "application/json; charset=utf-8"
    assert post.header("aeg-event-type") == "Notification"
    assert post.header("aeg-subscription-name") == "MIXED-CASE-APP"
    assert post.header("aeg-data-version") == "1.0"
    assert post.header("aeg-metadata-version") == "1"
    assert post.header("aeg-output-event-id")
    assert isinstance(post.body, list) and post.body[0]["eventType"] == INCOMING_CALL


def test_delivery_attribute_mappings_become_headers(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    mappings = [
        {"name": "X-Static", "type": "Static", "properties": {"value": "hello", "isSecret": False}},
        {"name": "Authorization", "type": "Static", "properties": {"value": "Bearer s3cret", "isSecret": True}},
        {"name": "X-Call", "type": "Dynamic", "properties": {"sourceField": "data.serverCallId"}},
        {"name": "X-Caller", "type": "Dynamic", "properties": {"sourceField": "data.FROM.phoneNumber.value"}},
        {"name": "X-Object", "type": "Dynamic", "properties": {"sourceField": "data.to"}},
        {"name": "X-Missing", "type": "Dynamic", "properties": {"sourceField": "data.nothing.here"}},
    ]
    put_subscription(
        fresh, "headers-app", webhook.url, properties=_webhook(webhook.url, deliveryAttributeMappings=mappings)
    )
    (call_id,) = raise_incoming_calls(fresh)
    settled(fresh)
    (post,) = webhook.notifications()
    assert post.header("X-Static") == "hello"
    assert post.header("Authorization") == "Bearer s3cret"
    assert post.header("X-Call") == call_id
    assert post.header("X-Caller") == "+12065550100"
    assert post.header("X-Object") is None  # only string, number and bool values
    assert post.header("X-Missing") is None


def _put(server: CallgridServer, name: str, mappings: object) -> requests.Response:
    body = {"properties": _webhook("http://127.0.0.1:9/hook", deliveryAttributeMappings=mappings)}
    return requests.put(subscription_url(server, name), json=body, headers=arm_headers(server))


def test_delivery_attribute_mappings_are_validated(fresh: CallgridServer) -> None:
    static = {"type": "Static", "properties": {"value": "v"}}
    cases = [
        ([{"name": f"X-{i}", **static} for i in range(11)], "at most 10"),
        ([{"name": "aeg-custom", **static}], "cannot start with 'aeg-'"),
        ([{"name": "X-Big", "type": "Static", "properties": {"value": "x" * 4097}}], "4096 bytes"),
        ([{"name": "X-Bad", "type": "Computed", "properties": {}}], "'Static' or 'Dynamic'"),
        ([{"name": "X-Dyn", "type": "Dynamic", "properties": {}}], "sourceField"),
        ([{"name": "bad header", **static}], "HTTP header name"),
        ("nope", "must be a list"),
    ]
    for mappings, message in cases:
        response = _put(fresh, "bad-headers", mappings)
        assert response.status_code == 400, (mappings, response.text)
        assert message in response.json()["error"]["message"]
    ok = _put(fresh, "good-headers", [{"name": "X-Ok", "type": "Static", "properties": {"value": "x" * 4096}}])
    assert ok.status_code in (200, 201), ok.text
