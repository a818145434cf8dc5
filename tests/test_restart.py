"""A server killed in the middle of the story loses nothing it acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.communication.identity import CommunicationIdentityClient, CommunicationTokenScope
from azure.communication.phonenumbers import PhoneNumbersClient

from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.support.arm import arm_headers, put_subscription, subscription_url

OWNED = "+14255551212"
CALLER = "+12065550100"
INCOMING_CALL = "Microsoft.Communication.IncomingCall"


@pytest.fixture
def server(tmp_path: Path, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    # A long ring timeout: the test moves the clock past the first retry while the call still rings.
    process = CallgridServer(tmp_path / "callgrid", tls_dir=callgrid_tls_dir, ring_timeout=120).start()
    yield process
    process.stop()


def test_sigkill_mid_story_loses_nothing(server: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(server, "router", webhook.url + "/incoming")
    user = CommunicationIdentityClient.from_connection_string(server.connection_string).create_user()
    client = server.client()
    client.own_number(OWNED)
    client.set_endpoint(user.properties["id"], "answer")

    # The app is down: the IncomingCall is accepted (durable) but cannot be delivered yet.
    down: list[Received] = []

    def unavailable(item: Received) -> tuple[int, Any]:
        down.append(item)
        return 503, None

    webhook.responder = unavailable
    placed = client.place_call(CALLER, OWNED)
    webhook.wait_until(lambda: down)
    first_try = down[0].body[0]
    # Kill only once the failed attempt is on record, so the retry after restart is attempt #2.
    webhook.wait_until(lambda: any(d["attempts"] == 1 for d in client.deliveries()["value"]))

    server.restart(hard=True)

    # Everything acknowledged before the kill is still there.
    assert PhoneNumbersClient.from_connection_string(server.connection_string).get_purchased_phone_number(OWNED)
    identity = CommunicationIdentityClient.from_connection_string(server.connection_string)
    assert identity.get_token(user, [CommunicationTokenScope.VOIP]).token
    sub = requests.get(subscription_url(server, "router"), headers=arm_headers(server)).json()
    assert sub["properties"]["provisioningState"] == "Succeeded"
    assert server.client().get_call(placed["serverCallId"])["state"] == "ringing"

    # The app comes back; the pending event is retried on Event Grid's schedule (30 s at least after a 503).
    webhook.responder = None
    server.advance(35)
    retried = webhook.wait_until(lambda: webhook.notifications()[1:])[0]
    delivered = retried.body
    assert delivered[0]["id"] == first_try["id"]
    assert retried.header("aeg-delivery-count") == "1"

    # The context issued before the kill still redirects the call after it.
    automation = CallAutomationClient.from_connection_string(server.connection_string)
    automation.redirect_call(
        delivered[0]["data"]["incomingCallContext"], CommunicationUserIdentifier(user.properties["id"])
    )
    webhook.wait_until(lambda: len(webhook.events(INCOMING_CALL)) == 3)
    call = webhook.wait_until(
        lambda: (c := server.client().get_call(placed["serverCallId"]))["state"] == "connected" and c
    )
    assert call["participants"][-1]["rawId"] == user.properties["id"]
