"""The seed's central story, end to end, with Microsoft's own SDKs against a real callgrid process.

A public PSTN caller dials an owned number; IncomingCall reaches the app's Event Grid webhook; the app
redirects with `redirect_call` to the identity the number is assigned to; that identity rings
(a second IncomingCall); its simulated device answers.
"""

from __future__ import annotations

import jwt
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.communication.identity import CommunicationIdentityClient
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.support.arm import put_subscription

OWNED = "+14255551212"
CALLER = "+12065550100"
INCOMING_CALL = "Microsoft.Communication.IncomingCall"


def test_pstn_call_is_redirected_to_the_assigned_identity(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    sub = put_subscription(fresh, "router-app", webhook.url + "/api/incoming?secret=s3cret")
    assert sub["properties"]["provisioningState"] == "Succeeded"
    handshake = webhook.received[0]
    assert handshake.header("aeg-event-type") == "SubscriptionValidation"
    assert handshake.path == "/api/incoming?secret=s3cret"

    identity = CommunicationIdentityClient.from_connection_string(fresh.connection_string)
    user = identity.create_user().properties["id"]
    client = fresh.client()
    client.own_number(OWNED)
    client.set_endpoint(user, "answer")

    placed = client.place_call(CALLER, OWNED)
    assert placed["state"] == "ringing"

    first = webhook.wait_until(lambda: webhook.events(INCOMING_CALL))[0]
    event = EventGridEvent.from_dict(first)
    delivery = webhook.notifications()[0]
    assert delivery.header("aeg-subscription-name") == "ROUTER-APP"
    assert delivery.header("aeg-delivery-count") == "0"
    assert delivery.header("aeg-data-version") == "1.0"
    assert delivery.header("aeg-metadata-version") == "1"
    assert delivery.header("Content-Type") == "application/json; charset=utf-8"
    assert event.event_type == INCOMING_CALL
    assert event.subject == f"/phoneCall/caller/{CALLER}/recipient/{OWNED}"
    assert event.topic == fresh.resource_id.lower()
    assert event.data_version == "1.0"
    assert event.data["to"] == {"kind": "phoneNumber", "rawId": "4:" + OWNED, "phoneNumber": {"value": OWNED}}
    assert event.data["from"]["phoneNumber"] == {"value": CALLER}
    assert event.data["serverCallId"] == placed["serverCallId"]
    assert event.data["correlationId"] == placed["correlationId"]
    assert event.data["customContext"] == {"sipHeaders": {}, "voipHeaders": {}}
    context = event.data["incomingCallContext"]
    assert context.count(".") == 2 and context.endswith(".")

    automation = CallAutomationClient.from_connection_string(fresh.connection_string)
    automation.redirect_call(context, CommunicationUserIdentifier(user))

    second = webhook.wait_until(lambda: webhook.events(INCOMING_CALL)[1:])[0]
    redirected = EventGridEvent.from_dict(second)
    assert redirected.subject == f"/caller/4:{CALLER}/recipient/{user}"
    assert redirected.data["to"] == {
        "kind": "communicationUser",
        "rawId": user,
        "communicationUser": {"id": user},
    }
    assert redirected.data["from"]["rawId"] == "4:" + CALLER
    assert redirected.data["serverCallId"] == placed["serverCallId"]
    assert redirected.data["incomingCallContext"] != context

    call = webhook.wait_until(lambda: (c := client.get_call(placed["serverCallId"]))["state"] == "connected" and c)
    assert [p["rawId"] for p in call["participants"]] == ["4:" + CALLER, user]
    events = [t["event"] for t in call["timeline"]]
    assert events == ["callPlaced", "ringing", "redirected", "ringing", "answered"]


def test_app_answers_and_receives_signed_callbacks(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "answering-app", webhook.url + "/eventgrid")
    client = fresh.client()
    client.own_number(OWNED)
    placed = client.place_call(CALLER, OWNED, display_name="Ada")
    incoming = EventGridEvent.from_dict(webhook.wait_until(lambda: webhook.events(INCOMING_CALL))[0])
    assert incoming.data["callerDisplayName"] == "Ada"

    automation = CallAutomationClient.from_connection_string(fresh.connection_string)
    result = automation.answer_call(
        incoming.data["incomingCallContext"],
        callback_url=webhook.url + "/callbacks?c=1",
        operation_context="ans",
    )
    assert result.call_connection_state == "connecting"
    assert result.server_call_id == placed["serverCallId"]
    assert result.correlation_id == placed["correlationId"]
    connection_id = result.call_connection_id

    callbacks = webhook.wait_until(lambda: len(webhook.callbacks()) >= 2 and webhook.callbacks())
    events = [CloudEvent.from_dict(e) for e in callbacks]
    assert [e.type for e in events] == [
        "Microsoft.Communication.CallConnected",
        "Microsoft.Communication.ParticipantsUpdated",
    ]
    connected, participants = events
    assert connected.source == f"calling/callConnections/{connection_id}"
    assert connected.data["operationContext"] == "ans"
    assert connected.data["callConnectionId"] == connection_id
    assert connected.data["serverCallId"] == placed["serverCallId"]
    assert connected.data["resultInformation"]["code"] == 200
    assert [p["identifier"]["rawId"] for p in participants.data["participants"]] == [
        "4:" + CALLER,
        "4:" + OWNED,
    ]
    callback_request = next(r for r in webhook.received if r.path == "/callbacks?c=1")

    # Each callback carries an RS256 JWT that verifies against the served JWKS.
    token = callback_request.header("Authorization").removeprefix("Bearer ")
    openid = fresh.client().request("GET", "/calling/.well-known/acsopenidconfiguration")
    keys = jwt.PyJWKClient(openid["jwks_uri"], ssl_context=_ssl(fresh))
    claims = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token).key,
        algorithms=["RS256"],
        issuer="https://acscallautomation.communication.azure.com",
        audience=fresh.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
    )
    assert claims["exp"] - claims["iat"] == 300

    connection = automation.get_call_connection(connection_id)
    props = connection.get_call_properties()
    assert props.call_connection_state == "connected"
    assert props.callback_url == webhook.url + "/callbacks?c=1"

    connection.hang_up(is_for_everyone=False)
    last = webhook.wait_until(lambda: len(webhook.callbacks()) >= 3 and webhook.callbacks())[-1]
    assert CloudEvent.from_dict(last).type == "Microsoft.Communication.CallDisconnected"
    assert client.get_call(placed["serverCallId"])["state"] == "disconnected"


def _ssl(server: CallgridServer):  # type: ignore[no-untyped-def]
    import ssl

    return ssl.create_default_context(cafile=server.ca_bundle)
