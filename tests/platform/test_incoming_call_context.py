"""incomingCallContext: single use, expiring with the ring timeout, unforgeable; bad input changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
from azure.communication.callautomation import (
    CallAutomationClient,
    CallRejectReason,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.communication.identity import CommunicationIdentityClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from callgrid.client import CallgridHttpError
from callgrid.security import sign_request
from callgrid.store import open_store
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.support.arm import put_subscription

OWNED = "+14255551212"
CALLER = "+12065550100"
INCOMING_CALL = "Microsoft.Communication.IncomingCall"


def _ring(server: CallgridServer, webhook: WebhookReceiver) -> tuple[dict[str, Any], dict[str, Any]]:
    put_subscription(server, "app", webhook.url)
    client = server.client()
    client.own_number(OWNED)
    placed = client.place_call(CALLER, OWNED)
    event = webhook.wait_until(lambda: webhook.events(INCOMING_CALL))[-1]
    return placed, event["data"]


@pytest.fixture
def automation(callgrid: CallgridServer) -> CallAutomationClient:
    return CallAutomationClient.from_connection_string(callgrid.connection_string, retry_total=0)


def test_a_context_is_single_use(fresh: CallgridServer, webhook: WebhookReceiver, automation: Any) -> None:
    _, data = _ring(fresh, webhook)
    automation.answer_call(data["incomingCallContext"], callback_url=webhook.url + "/cb")
    with pytest.raises(ResourceNotFoundError) as again:
        automation.redirect_call(data["incomingCallContext"], PhoneNumberIdentifier("+14255550000"))
    assert again.value.error.code == "8522"
    assert "already used" in again.value.error.message
    with pytest.raises(ResourceNotFoundError):
        automation.answer_call(data["incomingCallContext"], callback_url=webhook.url + "/cb")


def test_a_context_expires_with_the_ring_timeout(
    fresh: CallgridServer, webhook: WebhookReceiver, automation: Any
) -> None:
    placed, data = _ring(fresh, webhook)
    fresh.advance(31)
    with pytest.raises(ResourceNotFoundError) as expired:
        automation.answer_call(data["incomingCallContext"], callback_url=webhook.url + "/cb")
    assert "within time" in expired.value.error.message or "expired" in expired.value.error.message
    call = webhook.wait_until(
        lambda: (c := fresh.client().get_call(placed["serverCallId"]))["state"] == "disconnected" and c
    )
    assert call["endReason"]["subCode"] == 8587
    assert call["offers"][0]["state"] == "expired"


def test_a_forged_context_is_refused(fresh: CallgridServer, webhook: WebhookReceiver, automation: Any) -> None:
    _, data = _ring(fresh, webhook)
    head, payload, _ = data["incomingCallContext"].split(".")
    forged = f"{head}.{payload[:-4]}AAAA."
    for context in (forged, "not-a-context", "eyJhbGciOiJub25lIn0.eyJjYyI6IkVNVUxBVE9SIn0."):
        with pytest.raises(HttpResponseError) as refused:
            automation.answer_call(context, callback_url=webhook.url + "/cb")
        assert refused.value.status_code == 400
        assert refused.value.error.code == "8523"
    # The real context still works: nothing was consumed by the failures.
    automation.answer_call(data["incomingCallContext"], callback_url=webhook.url + "/cb")


def test_redirect_to_an_unknown_identity_changes_nothing(
    fresh: CallgridServer, webhook: WebhookReceiver, automation: Any
) -> None:
    placed, data = _ring(fresh, webhook)
    immutable_id = fresh.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
    ghost = CommunicationUserIdentifier(f"8:acs:{immutable_id}_00000000-0000-0000-0000-000000000000")
    with pytest.raises(ResourceNotFoundError) as unknown:
        automation.redirect_call(data["incomingCallContext"], ghost)
    assert "does not exist" in unknown.value.error.message
    foreign = CommunicationUserIdentifier(
        "8:acs:11111111-2222-3333-4444-555555555555_00000000-0000-0000-0000-000000000001"
    )
    with pytest.raises(HttpResponseError) as cross:
        automation.redirect_call(data["incomingCallContext"], foreign)
    assert cross.value.status_code == 403 and cross.value.error.code == "7507"
    call = fresh.client().get_call(placed["serverCallId"])
    assert [o["state"] for o in call["offers"]] == ["ringing"]
    user = CommunicationIdentityClient.from_connection_string(fresh.connection_string).create_user()
    automation.redirect_call(data["incomingCallContext"], user)
    assert (
        len(webhook.wait_until(lambda: len(webhook.events(INCOMING_CALL)) == 2 and webhook.events(INCOMING_CALL))) == 2
    )


def test_reject_reasons_end_the_call(fresh: CallgridServer, webhook: WebhookReceiver, automation: Any) -> None:
    placed, data = _ring(fresh, webhook)
    automation.reject_call(data["incomingCallContext"], call_reject_reason=CallRejectReason.BUSY)
    call = fresh.client().get_call(placed["serverCallId"])
    assert call["state"] == "disconnected"
    assert call["endReason"]["code"] == 486
    assert [t["event"] for t in call["timeline"]][-2:] == ["rejected", "disconnected"]


def test_a_declining_device_ends_the_call(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    client = fresh.client()
    client.own_number(OWNED)
    client.set_endpoint("4:" + OWNED, "decline")
    placed = client.place_call(CALLER, OWNED)
    call = webhook.wait_until(lambda: (c := client.get_call(placed["serverCallId"]))["state"] == "disconnected" and c)
    assert call["endReason"]["code"] == 603


def _raw(server: CallgridServer, method: str, path: str, body: bytes) -> requests.Response:
    from datetime import UTC, datetime

    headers = sign_request(method, path, f"localhost:{server.port}", body, server.access_key, datetime.now(UTC))
    headers["Content-Type"] = "application/json"
    return requests.request(method, server.endpoint + path, data=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"incomingCallContext": 5, "callbackUri": "https://x"}', "'incomingCallContext' must be of type string"),
        (b'{"incomingCallContext": "x"}', "'callbackUri' is required"),
        (b'{"incomingCallContext": "x", "callbackUri": "ftp://x"}', "callbackUri"),
    ],
)
def test_malformed_answer_requests_get_acs_errors(callgrid: CallgridServer, body: bytes, fragment: str) -> None:
    response = _raw(callgrid, "POST", "/calling/callConnections:answer?api-version=2026-03-12", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["code"]


def test_calls_to_unknown_parties_are_refused(fresh: CallgridServer) -> None:
    client = fresh.client()
    with pytest.raises(CallgridHttpError) as unowned:
        client.place_call(CALLER, "+14255550000")
    assert unowned.value.status == 400 and "not owned" in unowned.value.message
    immutable_id = fresh.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
    with pytest.raises(CallgridHttpError) as ghost:
        client.place_call(f"8:acs:{immutable_id}_00000000-0000-0000-0000-000000000000", CALLER)
    assert ghost.value.status == 404
    with pytest.raises(CallgridHttpError) as bad:
        client.request("POST", "/callgrid/v1/calls", {"from": 42, "to": CALLER})
    assert bad.value.status == 400
    assert client.request("GET", "/callgrid/v1/calls")["value"] == []


async def _offer_timers(server: CallgridServer, server_call_id: str) -> list[str]:
    store = await open_store(server.store or f"sqlite:///{(server.data_dir / 'callgrid.db').resolve()}")
    try:
        async with store.transaction() as tx:
            timers = await tx.due_timers(float("inf"), 1000)
    finally:
        await store.close()
    rings = [t for t in timers if t.kind == "offer.expire"]
    return [t.payload["offerId"] for t in rings if t.payload["serverCallId"] == server_call_id]


def test_a_redirect_deletes_the_old_offers_ring_timer(
    fresh: CallgridServer, webhook: WebhookReceiver, automation: Any
) -> None:
    placed, data = _ring(fresh, webhook)
    server_call_id = placed["serverCallId"]
    (first,) = asyncio.run(_offer_timers(fresh, server_call_id))
    user = CommunicationIdentityClient.from_connection_string(fresh.connection_string).create_user()
    automation.redirect_call(data["incomingCallContext"], user)
    offers = fresh.client().get_call(server_call_id)["offers"]
    assert [o["state"] for o in offers] == ["redirected", "ringing"]
    # Only the new offer's ring timeout is left to fire: the old one went with the redirect.
    (left,) = asyncio.run(_offer_timers(fresh, server_call_id))
    assert left != first


@pytest.mark.parametrize("how", ["answer", "reject"])
def test_an_answered_or_rejected_offer_leaves_no_ring_timer(
    fresh: CallgridServer, webhook: WebhookReceiver, automation: Any, how: str
) -> None:
    placed, data = _ring(fresh, webhook)
    server_call_id = placed["serverCallId"]
    assert len(asyncio.run(_offer_timers(fresh, server_call_id))) == 1
    if how == "answer":
        automation.answer_call(data["incomingCallContext"], callback_url=webhook.url + "/cb")
    else:
        automation.reject_call(data["incomingCallContext"])
    # The ring timeout went with the offer, rather than firing later to find it no longer ringing.
    assert asyncio.run(_offer_timers(fresh, server_call_id)) == []
