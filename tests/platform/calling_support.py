"""What Call Automation tests share: a resource with users and numbers, an app's webhooks, and readers
for the IncomingCall events and the signed callbacks it receives."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import jwt
from azure.communication.callautomation import CallAutomationClient
from azure.communication.identity import CommunicationIdentityClient
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from callgrid.client import CallgridClient
from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.support.arm import put_subscription

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
CALL_EVENTS = [
    INCOMING_CALL,
    "Microsoft.Communication.CallStarted",
    "Microsoft.Communication.CallEnded",
    "Microsoft.Communication.CallParticipantAdded",
    "Microsoft.Communication.CallParticipantRemoved",
    "Microsoft.Communication.RecordingFileStatusUpdated",
]
ISSUER = "https://acscallautomation.communication.azure.com"

PSTN_CALLER = "+12065550100"
ENTRY_NUMBER = "+14255551212"  # the number the app answers
TARGET_NUMBER = "+14255550199"  # another owned number, the target of the scenario


def phone(e164: str) -> str:
    return "4:" + e164


@dataclass
class World:
    server: CallgridServer
    webhook: WebhookReceiver
    client: CallgridClient
    automation: CallAutomationClient
    users: list[str] = field(default_factory=list)

    @property
    def callback_url(self) -> str:
        return self.webhook.url + "/callbacks"

    def user(self) -> str:
        identity = CommunicationIdentityClient.from_connection_string(self.server.connection_string)
        raw_id: str = identity.create_user().properties["id"]
        self.users.append(raw_id)
        return raw_id

    def device(self, raw_id: str, behaviour: str, delay_ms: int = 0, connect_delay_ms: int = 0) -> None:
        self.client.request(
            "PUT",
            "/callgrid/v1/endpoints/" + _quote(raw_id),
            {"onIncomingCall": behaviour, "answerDelayMs": delay_ms, "connectDelayMs": connect_delay_ms},
        )

    def place_call(self, source: str, target: str, **extra: Any) -> dict[str, Any]:
        placed: dict[str, Any] = self.client.request(
            "POST", "/callgrid/v1/calls", {"from": source, "to": target, **extra}
        )
        return placed

    def get_call(self, server_call_id: str) -> dict[str, Any]:
        call: dict[str, Any] = self.client.request("GET", f"/callgrid/v1/calls/{server_call_id}")
        return call

    def incoming(self, index: int) -> EventGridEvent:
        """The index-th IncomingCall the app's Event Grid webhook received."""
        events = self.webhook.wait_until(
            lambda: len(self.webhook.events(INCOMING_CALL)) > index and self.webhook.events(INCOMING_CALL)
        )
        return EventGridEvent.from_dict(events[index])

    def incoming_count(self) -> int:
        return len(self.webhook.events(INCOMING_CALL))

    def system_events(self, event_type: str) -> list[EventGridEvent]:
        return [EventGridEvent.from_dict(e) for e in self.webhook.events(event_type)]

    def callbacks(self, call_connection_id: str, count: int) -> list[CloudEvent]:
        """The first `count` callbacks of one connection, in the order the service raised them."""

        def mine() -> list[dict[str, Any]]:
            return [e for e in self.webhook.callbacks() if e["data"]["callConnectionId"] == call_connection_id]

        found = self.webhook.wait_until(lambda: len(mine()) >= count and mine())
        # Callbacks are separate POSTs that may overtake each other; their times are strictly ordered.
        return [CloudEvent.from_dict(e) for e in sorted(found, key=lambda e: e["time"])]

    def callback_types(self, call_connection_id: str, count: int) -> list[str]:
        return [e.type.removeprefix("Microsoft.Communication.") for e in self.callbacks(call_connection_id, count)]

    def callback_requests(self) -> list[Received]:
        return [r for r in self.webhook.received if r.method == "POST" and r.header("aeg-event-type") is None]

    def verify_callback_jwt(self, request: Received) -> dict[str, Any]:
        token = (request.header("Authorization") or "").removeprefix("Bearer ")
        openid = self.client.request("GET", "/calling/.well-known/acsopenidconfiguration")
        keys = jwt.PyJWKClient(openid["jwks_uri"], ssl_context=ssl.create_default_context(cafile=self.server.ca_bundle))
        claims: dict[str, Any] = jwt.decode(
            token,
            keys.get_signing_key_from_jwt(token).key,
            algorithms=["RS256"],
            issuer=ISSUER,
            audience=self.server.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
        )
        return claims


def make_world(server: CallgridServer, webhook: WebhookReceiver) -> World:
    put_subscription(server, "calls-app", webhook.url + "/eventgrid", included_event_types=CALL_EVENTS)
    client = server.client()
    client.own_number(ENTRY_NUMBER)
    client.own_number(TARGET_NUMBER)
    automation = CallAutomationClient.from_connection_string(server.connection_string, retry_total=0)
    return World(server, webhook, client, automation)


def _quote(raw_id: str) -> str:
    from urllib.parse import quote

    return quote(raw_id, safe="")
