"""The walking skeleton's ARM surface: create with handshake, read back, refusals and bad input."""

from __future__ import annotations

from typing import Any

import requests

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.support.arm import API, arm_headers, put_subscription, subscription_url


def _put(server: CallgridServer, name: str, body: Any) -> requests.Response:
    return requests.put(subscription_url(server, name), json=body, headers=arm_headers(server))


def test_created_subscription_hides_its_endpoint_url(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    sub = put_subscription(fresh, "app-one", webhook.url + "/hook?code=secret")
    props = sub["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert props["topic"].lower() == fresh.resource_id.lower()
    assert props["destination"]["properties"]["endpointBaseUrl"] == webhook.url + "/hook"
    assert "endpointUrl" not in props["destination"]["properties"]
    assert sub["name"] == "app-one"
    full = requests.post(
        subscription_url(fresh, "app-one").replace(f"?{API}", f"/getFullUrl?{API}"), headers=arm_headers(fresh)
    )
    assert full.json() == {"endpointUrl": webhook.url + "/hook?code=secret"}
    listed = requests.get(
        f"{fresh.endpoint}{fresh.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions?{API}",
        headers=arm_headers(fresh),
    ).json()
    assert [s["name"] for s in listed["value"]] == ["app-one"]
    assert requests.delete(subscription_url(fresh, "app-one"), headers=arm_headers(fresh)).status_code == 200
    missing = requests.get(subscription_url(fresh, "app-one"), headers=arm_headers(fresh))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


def test_an_endpoint_that_refuses_the_handshake_gets_nothing(fresh: CallgridServer) -> None:
    refusing = WebhookReceiver(validate=False, responder=lambda item: (403, None))
    try:
        sub = put_subscription(fresh, "refused", refusing.url + "/hook")
        assert sub["properties"]["provisioningState"] == "Failed"
        client = fresh.client()
        client.own_number("+14255551212")
        client.place_call("+12065550100", "+14255551212")
        deliveries = client.deliveries()["value"]
        assert [d for d in deliveries if d["kind"] == "eventgrid"] == []
        assert all(r.header("aeg-event-type") == "SubscriptionValidation" for r in refusing.received)
    finally:
        refusing.close()


def test_bad_subscription_bodies_get_arm_errors(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    cases = [
        ({"properties": {}}, "destination"),
        ({"properties": {"destination": {"endpointType": "WebHook", "properties": {}}}}, "endpointUrl"),
        (
            {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "not a url"}}}},
            "URL",
        ),
        (
            {
                "properties": {
                    "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": webhook.url}},
                    "filter": {"advancedFilters": [{"operatorType": "StringLike", "key": "data.x", "values": ["a"]}]},
                }
            },
            "StringLike",
        ),
        (
            {
                "properties": {
                    "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": webhook.url}},
                    "retryPolicy": {"maxDeliveryAttempts": 31},
                }
            },
            "maxDeliveryAttempts",
        ),
    ]
    for body, fragment in cases:
        response = _put(fresh, "bad-one", body)
        assert response.status_code == 400, (body, response.text)
        assert fragment in response.json()["error"]["message"], response.text
    malformed = requests.put(
        subscription_url(fresh, "bad-one"),
        data=b"{oops",
        headers={**arm_headers(fresh), "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    # Nothing half-written: the failed PUTs left no subscription behind.
    assert requests.get(subscription_url(fresh, "bad-one"), headers=arm_headers(fresh)).status_code == 404


def test_wrong_scope_and_missing_api_version(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    other = subscription_url(fresh, "x").replace("communicationServices/callgrid", "communicationServices/other")
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": webhook.url}}}}
    assert requests.put(other, json=body, headers=arm_headers(fresh)).status_code == 404
    no_version = subscription_url(fresh, "x").split("?")[0]
    response = requests.put(no_version, json=body, headers=arm_headers(fresh))
    assert response.status_code == 400 and response.json()["error"]["code"] == "MissingApiVersionParameter"
