"""Validation handshakes through ARM (eventgrid.md 2.4, 4.1, 4.2): nothing is delivered to an endpoint
that did not consent; consent by echo, by validationUrl, by CloudEvents OPTIONS header or callback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from callgrid.testing import CallgridServer, Received, WebhookReceiver, free_port
from tests.eventgrid.rest import extension_url, headers, put, wait_state, webhook_properties

CE = {"eventDeliverySchema": "CloudEventSchemaV1_0"}


def create(server: CallgridServer, name: str, url: str, **extra: Any) -> dict[str, Any]:
    response = put(server, extension_url(server, name), webhook_properties(url, **extra))
    assert response.status_code == 201, response.text
    assert "Azure-AsyncOperation" in response.headers
    return wait_state(server, extension_url(server, name))


def test_wrong_validation_code_fails(fresh: CallgridServer) -> None:
    hook = WebhookReceiver(validate=False, responder=lambda r: (200, {"validationResponse": "nope"}))
    try:
        sub = create(fresh, "wrong-code", hook.url)
        assert sub["properties"]["provisioningState"] == "Failed"
    finally:
        hook.close()


@pytest.mark.parametrize(
    ("echo", "state"),
    [
        # What a Python app that answers str({"validationResponse": code}) sends: consent.
        ("{{'validationResponse': '{code}'}}", "Succeeded"),
        # Not JSON even with its quotes read leniently: no consent.
        ("validationResponse: {code}", "AwaitingManualAction"),
    ],
    ids=["single-quoted", "not-json"],
)
def test_how_the_echo_is_written_decides_consent(fresh: CallgridServer, echo: str, state: str) -> None:
    def answer(r: Received) -> tuple[int, bytes]:
        return 200, echo.format(code=r.body[0]["data"]["validationCode"]).encode()

    hook = WebhookReceiver(validate=False, responder=answer)
    try:
        sub = create(fresh, f"echo-{state.lower()}", hook.url)
        assert sub["properties"]["provisioningState"] == state
    finally:
        hook.close()


def test_no_response_fails(fresh: CallgridServer) -> None:
    sub = create(fresh, "nobody-home", f"http://127.0.0.1:{free_port()}/hook")
    assert sub["properties"]["provisioningState"] == "Failed"


def test_manual_validation_through_the_validation_url(fresh: CallgridServer) -> None:
    hook = WebhookReceiver(validate=False, responder=lambda r: (200, None))
    try:
        sub = create(fresh, "manual", hook.url)
        assert sub["properties"]["provisioningState"] == "AwaitingManualAction"
        validation_url = hook.received[0].body[0]["data"]["validationUrl"]
        assert requests.get(validation_url, verify=fresh.ca_bundle).status_code == 200
        state = requests.get(extension_url(fresh, "manual"), headers=headers(fresh)).json()
        assert state["properties"]["provisioningState"] == "Succeeded"
    finally:
        hook.close()


def test_manual_validation_url_expires_after_five_minutes(fresh: CallgridServer) -> None:
    hook = WebhookReceiver(validate=False, responder=lambda r: (200, None))
    try:
        create(fresh, "too-late", hook.url)
        fresh.advance(301)
        validation_url = hook.received[0].body[0]["data"]["validationUrl"]
        assert requests.get(validation_url, verify=fresh.ca_bundle).status_code == 400
    finally:
        hook.close()


def test_cloud_events_consent_in_the_options_answer(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    sub = create(fresh, "ce-sync", webhook.url + "/ce", **CE)
    assert sub["properties"]["provisioningState"] == "Succeeded"
    assert sub["properties"]["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    options = [r for r in webhook.received if r.method == "OPTIONS"]
    assert len(options) == 1 and not [r for r in webhook.received if r.method == "POST"]
    assert options[0].header("WebHook-Request-Origin") == "eventgrid.azure.net"
    assert options[0].header("WebHook-Request-Callback")


def test_cloud_events_consent_through_the_callback(fresh: CallgridServer) -> None:
    # Like real ACS handlers that answer 200 without the header, then call the callback URL.
    hook = WebhookReceiver(validate=False, responder=lambda r: (200, None))
    try:
        sub = create(fresh, "ce-callback", hook.url, **CE)
        assert sub["properties"]["provisioningState"] == "AwaitingManualAction"
        callback = hook.received[0].header("WebHook-Request-Callback")
        assert callback is not None
        assert requests.post(callback, verify=fresh.ca_bundle).status_code == 200
        state = requests.get(extension_url(fresh, "ce-callback"), headers=headers(fresh)).json()
        assert state["properties"]["provisioningState"] == "Succeeded"
    finally:
        hook.close()


def test_cloud_events_405_is_no_consent(fresh: CallgridServer) -> None:
    def no_options(r: Received) -> tuple[int, Any]:
        return (405, None) if r.method == "OPTIONS" else (200, None)

    hook = WebhookReceiver(validate=False, responder=no_options)
    try:
        sub = create(fresh, "ce-refused", hook.url, **CE)
        assert sub["properties"]["provisioningState"] == "Failed"
        # Nothing is ever delivered there: a call raises an event, but the subscription is not active.
        client = fresh.client()
        client.own_number("+14255551212")
        client.place_call("+12065550100", "+14255551212")
        fresh.advance(60)
        assert [r.method for r in hook.received] == ["OPTIONS"]
    finally:
        hook.close()


def test_expired_subscription_stops_receiving_and_is_removed(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    clock = fresh.client().request("GET", "/callgrid/v1/clock")["now"]
    expires = (datetime.fromtimestamp(clock, UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    sub = create(fresh, "short-lived", webhook.url, expirationTimeUtc=expires)
    assert sub["properties"]["provisioningState"] == "Succeeded"
    assert sub["properties"]["expirationTimeUtc"].startswith(expires[:19])
    fresh.advance(601)
    client = fresh.client()
    client.own_number("+14255551212")
    client.place_call("+12065550100", "+14255551212")
    webhook.wait_until(
        lambda: requests.get(extension_url(fresh, "short-lived"), headers=headers(fresh)).status_code == 404
    )
    assert webhook.notifications() == []


def test_expiration_in_the_past_is_refused(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    response = put(
        fresh, extension_url(fresh, "past"), webhook_properties(webhook.url, expirationTimeUtc="2001-01-01T00:00:00Z")
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequest"
