"""Several Communication resources on one server, each as isolated as two Azure resources are: with Microsoft's
own SDKs, a resource's identities, numbers, calls and events are unknown to another, and its keys and ARM
token reach only its own state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    CommunicationUserIdentifier,
    FileSource,
    PhoneNumberIdentifier,
)
from azure.communication.identity import CommunicationIdentityClient, CommunicationTokenScope
from azure.communication.phonenumbers import (
    PhoneNumberAssignmentType,
    PhoneNumberCapabilities,
    PhoneNumberCapabilityType,
    PhoneNumbersClient,
    PhoneNumberType,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.eventgrid import EventGridEvent

from callgrid.client import CallgridHttpError
from callgrid.testing import CallgridResource, CallgridServer, WebhookReceiver
from tests.platform.calling_support import CALL_EVENTS, INCOMING_CALL, World
from tests.support.arm import put_subscription
from tests.support.credential import CallgridCredential

CALLER = "+12065550100"
NUMBER_A = "+14255550101"
NUMBER_B = "+14255550202"
API = "api-version=2025-02-15"


def _identity(target: CallgridServer | CallgridResource) -> CommunicationIdentityClient:
    return CommunicationIdentityClient.from_connection_string(
        target.connection_string, connection_verify=target.ca_bundle, retry_total=0
    )


def _numbers(target: CallgridServer | CallgridResource) -> PhoneNumbersClient:
    return PhoneNumbersClient.from_connection_string(
        target.connection_string, connection_verify=target.ca_bundle, retry_total=0
    )


def _automation(target: CallgridServer | CallgridResource) -> CallAutomationClient:
    return CallAutomationClient.from_connection_string(
        target.connection_string, connection_verify=target.ca_bundle, retry_total=0
    )


def _status(action: Callable[[], Any]) -> int:
    with pytest.raises(HttpResponseError) as failure:
        action()
    assert failure.value.status_code is not None
    return failure.value.status_code


def _arm(target: CallgridServer | CallgridResource, method: str, path: str, body: Any = None, *, token: str) -> Any:
    return target.client().arm(method, path, body, token=token)


def _arm_status(target: CallgridServer | CallgridResource, method: str, path: str, *, token: str) -> int:
    with pytest.raises(CallgridHttpError) as failure:
        _arm(target, method, path, {"properties": {}} if method == "PUT" else None, token=token)
    return failure.value.status


def test_a_resource_has_its_own_name_keys_and_immutable_id(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    assert b.env["CALLGRID_RESOURCE_NAME"] == "team-b"
    assert b.resource_id.endswith("/providers/Microsoft.Communication/communicationServices/team-b")
    assert b.immutable_id != callgrid.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
    assert b.access_key not in (callgrid.access_key, b.env["CALLGRID_SECONDARY_ACCESS_KEY"])
    # One endpoint for all: the key says which resource a request is for.
    assert b.connection_string == f"endpoint={callgrid.endpoint};accesskey={b.access_key}"
    listed = callgrid.client().request("GET", "/callgrid/v1/resources")["value"]
    assert [(r["name"], r["isDefault"]) for r in listed] == [("callgrid", True), ("team-b", False)]
    assert "primaryKey" not in listed[1]
    shown = callgrid.client().request("GET", "/callgrid/v1/resources/team-b")
    assert shown["primaryKey"] == b.access_key and shown["immutableResourceId"] == b.immutable_id

    with pytest.raises(CallgridHttpError) as taken:
        callgrid.client().request("POST", "/callgrid/v1/resources", {"name": "TEAM-B"})
    assert taken.value.status == 409
    with pytest.raises(CallgridHttpError) as bad:
        callgrid.client().request("POST", "/callgrid/v1/resources", {"name": "-no"})
    assert bad.value.status == 400 and bad.value.code == "InvalidResourceName"
    with pytest.raises(CallgridHttpError) as default:
        callgrid.client().request("DELETE", "/callgrid/v1/resources/callgrid")
    assert default.value.status == 400
    # Resources are the server owner's to manage: another resource's key may not.
    with pytest.raises(CallgridHttpError) as not_owner:
        b.client().request("POST", "/callgrid/v1/resources", {"name": "team-c"})
    assert not_owner.value.status == 403
    for method, path, body in (
        ("POST", "/callgrid/v1/reset", None),
        ("POST", "/callgrid/v1/faults", {"kind": "device", "rawId": "4:+14255550000", "behaviour": "busy"}),
        ("DELETE", "/callgrid/v1/faults", None),
        ("GET", "/callgrid/v1/resources", None),
        ("DELETE", "/callgrid/v1/resources/callgrid", None),
    ):
        with pytest.raises(CallgridHttpError) as server_wide:
            b.client().request(method, path, body)
        assert server_wide.value.status == 403, path


def test_identities_are_isolated(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    ident_a, ident_b = _identity(callgrid), _identity(b)
    user_b = ident_b.create_user()
    assert user_b.properties["id"].startswith(f"8:acs:{b.immutable_id}_")
    assert ident_b.get_token(user_b, [CommunicationTokenScope.VOIP]).token

    # Resource A does not know B's user: every identity operation is 404, as for one that never existed.
    with pytest.raises(ResourceNotFoundError):
        ident_a.get_token(user_b, [CommunicationTokenScope.VOIP])
    with pytest.raises(ResourceNotFoundError):
        ident_a.revoke_tokens(user_b)
    with pytest.raises(ResourceNotFoundError):
        ident_a.delete_user(user_b)
    user_a = ident_a.create_user()
    with pytest.raises(ResourceNotFoundError):
        ident_b.get_token(user_a, [CommunicationTokenScope.CHAT])
    # Nothing A tried touched B's user.
    ident_b.revoke_tokens(user_b)
    ident_b.delete_user(user_b)


def test_numbers_are_isolated(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    callgrid.own_number(NUMBER_A)
    b.own_number(NUMBER_B)
    numbers_a, numbers_b = _numbers(callgrid), _numbers(b)
    assert [n.phone_number for n in numbers_a.list_purchased_phone_numbers()] == [NUMBER_A]
    assert [n.phone_number for n in numbers_b.list_purchased_phone_numbers()] == [NUMBER_B]
    with pytest.raises(ResourceNotFoundError):
        numbers_a.get_purchased_phone_number(NUMBER_B)
    with pytest.raises(ResourceNotFoundError):
        numbers_a.begin_release_phone_number(NUMBER_B, polling_interval=0)
    # Nor can A script the device behind B's number.
    with pytest.raises(CallgridHttpError) as device:
        callgrid.set_device("4:" + NUMBER_B, "busy")
    assert device.value.status == 404
    # A number is one line of the network: owned by one resource at most.
    with pytest.raises(CallgridHttpError) as owned:
        callgrid.client().own_number(NUMBER_B)
    assert owned.value.status == 409 and "another Communication resource" in owned.value.message

    # Bought through the SDK, a number is the buyer's; a search is the searcher's.
    search = numbers_b.begin_search_available_phone_numbers(
        "US",
        PhoneNumberType.GEOGRAPHIC,
        PhoneNumberAssignmentType.APPLICATION,
        PhoneNumberCapabilities(calling=PhoneNumberCapabilityType.INBOUND, sms=PhoneNumberCapabilityType.NONE),
        polling_interval=0,
    ).result()
    with pytest.raises(ResourceNotFoundError):
        numbers_a.begin_purchase_phone_numbers(search.search_id, polling_interval=0)
    numbers_b.begin_purchase_phone_numbers(search.search_id, polling_interval=0).result()
    bought = search.phone_numbers[0]
    assert {n.phone_number for n in numbers_b.list_purchased_phone_numbers()} == {NUMBER_B, bought}
    assert [n.phone_number for n in numbers_a.list_purchased_phone_numbers()] == [NUMBER_A]
    assert bought not in [n["phoneNumber"] for n in callgrid.client().list_numbers()["phoneNumbers"]]


def test_events_reach_only_their_own_resources_subscribers(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    with WebhookReceiver() as hook_a, WebhookReceiver() as hook_b:
        world_a, world_b = _world(callgrid, hook_a), _world(b, hook_b)
        callgrid.own_number(NUMBER_A)
        b.own_number(NUMBER_B)
        placed_a = callgrid.place_call(CALLER, NUMBER_A)
        placed_b = b.place_call(CALLER, NUMBER_B)
        event_a, event_b = world_a.incoming(0), world_b.incoming(0)
        assert event_a.topic == callgrid.resource_id.lower()
        assert event_b.topic == b.resource_id.lower()
        assert event_a.data["serverCallId"] == placed_a["serverCallId"]
        assert event_b.data["serverCallId"] == placed_b["serverCallId"]
        assert event_b.data["to"]["phoneNumber"]["value"] == NUMBER_B

        # A's context is worthless to B's app, and the other way round.
        with pytest.raises(HttpResponseError):
            world_b.automation.answer_call(event_a.data["incomingCallContext"], world_b.callback_url)
        answered = _automation(b).answer_call(event_b.data["incomingCallContext"], world_b.callback_url)
        ccid_b = answered.call_connection_id
        callgrid.advance(2)
        connected = world_b.callbacks(ccid_b, 1)[0]
        assert connected.type == "Microsoft.Communication.CallConnected"
        # B's callbacks are signed for B: their JWT audience is B's immutable id.
        request = next(r for r in world_b.callback_requests() if ccid_b.encode() in r.raw)
        token_audience = _jwt_audience(request.header("Authorization") or "")
        assert token_audience == b.immutable_id

        # B's call connection is unknown to A: every call-connection route answers 404.
        automation_a = _automation(callgrid)
        connection_a = automation_a.get_call_connection(ccid_b)
        actions: list[Callable[[], Any]] = [
            connection_a.get_call_properties,
            lambda: list(connection_a.list_participants()),
            lambda: connection_a.get_participant(PhoneNumberIdentifier(CALLER)),
            lambda: connection_a.play_media_to_all(FileSource("https://example.invalid/a.wav")),
            lambda: connection_a.hang_up(is_for_everyone=True),
        ]
        for action in actions:
            assert _status(action) == 404
        assert _status(lambda: automation_a.start_recording(server_call_id=placed_b["serverCallId"])) == 404
        with pytest.raises(ResourceNotFoundError):
            automation_a.connect_call(server_call_id=placed_b["serverCallId"], callback_url=world_a.callback_url)
        with pytest.raises(CallgridHttpError) as unseen:
            callgrid.get_call(placed_b["serverCallId"])
        assert unseen.value.status == 404
        assert placed_b["serverCallId"] not in [
            c["serverCallId"] for c in callgrid.client().request("GET", "/callgrid/v1/calls")["value"]
        ]
        # B's own app still has its call.
        assert _automation(b).get_call_connection(ccid_b).get_call_properties().call_connection_state == "connected"

        callgrid.advance(1)

        # Each webhook saw its own resource's events only.
        def topics(hook: WebhookReceiver) -> set[str]:
            return {EventGridEvent.from_dict(e).topic for e in hook.events()}

        assert topics(hook_a) == {callgrid.resource_id.lower()}
        assert topics(hook_b) == {b.resource_id.lower()}
        assert {e["data"]["serverCallId"] for e in hook_a.events(INCOMING_CALL)} == {placed_a["serverCallId"]}
        assert all(e["data"]["serverCallId"] == placed_b["serverCallId"] for e in hook_b.events())


def _world(target: CallgridServer | CallgridResource, hook: WebhookReceiver) -> World:
    """An app of `target`: its subscription to the call events, its clients."""
    put_subscription(
        cast(CallgridServer, target), "calls-app", hook.url + "/eventgrid", included_event_types=CALL_EVENTS
    )
    return World(cast(CallgridServer, target), hook, target.client(), _automation(target))


def _jwt_audience(header: str) -> str:
    import jwt

    claims = jwt.decode(header.removeprefix("Bearer "), options={"verify_signature": False})
    return str(claims["aud"])


def test_calls_between_resources_are_refused(callgrid: CallgridServer) -> None:
    """ACS: "Make calls only between entities of the same Communication Services resource. Cross-resource
    communication is blocked." callgrid refuses such calls (403), whether they name a user or a number."""
    b = callgrid.create_resource("team-b")
    callgrid.own_number(NUMBER_A)
    b.own_number(NUMBER_B)
    user_a = _identity(callgrid).create_user().properties["id"]
    user_b = _identity(b).create_user().properties["id"]
    automation_b = _automation(b)
    callback = "https://app.example/callbacks"
    assert _status(lambda: automation_b.create_call(CommunicationUserIdentifier(user_a), callback)) == 403
    to_a_number = PhoneNumberIdentifier(NUMBER_A)
    status = _status(
        lambda: automation_b.create_call(to_a_number, callback, source_caller_id_number=PhoneNumberIdentifier(NUMBER_B))
    )
    assert status == 403
    # A simulated call between the two resources' users, either way round.
    with pytest.raises(CallgridHttpError) as cross:
        b.place_call(user_b, user_a)
    assert cross.value.status == 403 and "another Communication resource" in cross.value.message
    with pytest.raises(CallgridHttpError):
        callgrid.place_call(user_a, user_b)
    # Within each resource, calls go through.
    assert b.place_call(CALLER, NUMBER_B)["state"] == "ringing"
    assert callgrid.place_call(CALLER, NUMBER_A)["state"] == "ringing"


def test_a_resources_listings_are_not_crowded_out_by_another_resources(callgrid: CallgridServer) -> None:
    """`limit` counts the asking resource's calls and identities, not the server's."""
    b = callgrid.create_resource("team-b")
    b.own_number(NUMBER_B)
    callgrid.own_number(NUMBER_A)
    user_b = _identity(b).create_user().properties["id"]
    b_call = b.place_call(CALLER, NUMBER_B)["serverCallId"]
    ident_a = _identity(callgrid)
    for _ in range(3):  # newer than B's: the server's newest three are all A's
        ident_a.create_user()
        callgrid.place_call(CALLER, NUMBER_A)

    calls = b.client().request("GET", "/callgrid/v1/calls?limit=2")["value"]
    assert [c["serverCallId"] for c in calls] == [b_call]
    identities = b.client().request("GET", "/callgrid/v1/identities?limit=2")["value"]
    assert [i["rawId"] for i in identities] == [user_b]
    assert len(callgrid.client().request("GET", "/callgrid/v1/calls?limit=2")["value"]) == 2


def test_a_key_reaches_only_its_resource_and_a_retired_key_nothing(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    secondary = b.env["CALLGRID_SECONDARY_ACCESS_KEY"]
    old = b.connection_string
    families: list[Callable[[str], Any]] = [
        lambda cs: list(PhoneNumbersClient.from_connection_string(cs, retry_total=0).list_purchased_phone_numbers()),
        lambda cs: CommunicationIdentityClient.from_connection_string(cs, retry_total=0).create_user(),
        lambda cs: (
            CallAutomationClient.from_connection_string(cs, retry_total=0)
            .get_call_connection("00000000-0000-0000-0000-000000000000")
            .get_call_properties()
        ),
    ]

    def refused(connection_string: str, family: Callable[[str], Any]) -> None:
        with pytest.raises((ClientAuthenticationError, HttpResponseError)) as failure:
            family(connection_string)
        assert cast(HttpResponseError, failure.value).status_code == 401

    for family in families[:2]:
        family(old)  # the key works for its own resource
    # The primary key is replaced: the old one is refused by every SDK, the secondary keeps working.
    renewed = callgrid.client().request("POST", "/callgrid/v1/resources/team-b:regenerateKey", {"keyType": "primary"})
    for family in families:
        refused(old, family)
    for family in families[:2]:
        family(renewed["primaryConnectionString"])
        family(f"endpoint={callgrid.endpoint};accesskey={secondary}")
    # A deleted resource's keys are refused everywhere.
    callgrid.delete_resource("team-b")
    for family in families:
        refused(renewed["primaryConnectionString"], family)
        refused(f"endpoint={callgrid.endpoint};accesskey={secondary}", family)
    with pytest.raises(CallgridHttpError) as own_route:
        CallgridResource(callgrid, "team-b", {**b.env, "CALLGRID_ACCESS_KEY": secondary}).client().list_numbers()
    assert own_route.value.status == 401


def test_arm_tokens_reach_only_their_resource(callgrid: CallgridServer, webhook: WebhookReceiver) -> None:
    b = callgrid.create_resource("team-b")
    sub_b = b.subscribe(webhook.url, name="b-calls")
    assert sub_b["id"].lower().startswith(b.resource_id.lower())
    a_path = callgrid.subscription_path("a-calls")
    b_path = b.subscription_path("b-calls")
    # Each token is worthless on the other resource's path (ARM's 403 for a principal without a role there).
    assert _arm_status(callgrid, "GET", b_path, token=callgrid.arm_token) == 403
    assert _arm_status(b, "PUT", a_path, token=b.arm_token) == 403
    listing = f"{b.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions?{API}"
    assert [s["name"] for s in _arm(b, "GET", listing, token=b.arm_token)["value"]] == ["b-calls"]
    a_listing = f"{callgrid.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions?{API}"
    assert _arm_status(b, "GET", a_listing, token=b.arm_token) == 403

    # Each resource has its own system topic; a token makes only its own resource's.
    group = callgrid.resource_id.split("/")[4]
    sub_id = callgrid.resource_id.split("/")[2]
    topics = f"/subscriptions/{sub_id}/resourceGroups/{group}/providers/Microsoft.EventGrid/systemTopics"
    body_a = {"location": "global", "properties": {"source": callgrid.resource_id, "topicType": _TOPIC_TYPE}}
    body_b = {"location": "global", "properties": {"source": b.resource_id, "topicType": _TOPIC_TYPE}}
    _arm(callgrid, "PUT", f"{topics}/topic-a?{API}", body_a, token=callgrid.arm_token)
    with pytest.raises(CallgridHttpError) as foreign:
        _arm(b, "PUT", f"{topics}/topic-x?{API}", body_a, token=b.arm_token)
    assert foreign.value.status == 403
    _arm(b, "PUT", f"{topics}/topic-b?{API}", body_b, token=b.arm_token)
    assert _arm_status(b, "GET", f"{topics}/topic-a?{API}", token=b.arm_token) == 403
    assert _arm_status(b, "PUT", f"{topics}/topic-a/eventSubscriptions/spy?{API}", token=b.arm_token) == 403
    assert _arm_status(b, "DELETE", f"{topics}/topic-a?{API}", token=b.arm_token) == 403
    seen_by_b = _arm(b, "GET", f"{topics}?{API}", token=b.arm_token)["value"]
    assert [t["name"] for t in seen_by_b] == ["topic-b"]
    seen_by_a = _arm(callgrid, "GET", f"{topics}?{API}", token=callgrid.arm_token)["value"]
    assert [t["name"] for t in seen_by_a] == ["topic-a"]

    callgrid.delete_resource("team-b")
    # The resource's token now names a principal that is gone, and its path names nothing.
    assert _arm_status(b, "GET", listing, token=b.arm_token) == 401
    assert _arm_status(callgrid, "GET", listing, token=callgrid.arm_token) == 404
    assert [t["name"] for t in _arm(callgrid, "GET", f"{topics}?{API}", token=callgrid.arm_token)["value"]] == [
        "topic-a"
    ]


_TOPIC_TYPE = "Microsoft.Communication.CommunicationServices"


def test_deleting_a_resource_removes_its_state(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    b.own_number(NUMBER_B)
    user_b = _identity(b).create_user().properties["id"]
    with WebhookReceiver() as hook_b:
        put_subscription(cast(CallgridServer, b), "b-calls", hook_b.url)
        callgrid.delete_resource("team-b")
        # Its number is free again, for any resource; its webhook hears nothing more.
        callgrid.own_number(NUMBER_B)
        callgrid.place_call(CALLER, NUMBER_B)
        callgrid.advance(1)
        assert hook_b.events(INCOMING_CALL) == []
    with pytest.raises(CallgridHttpError) as gone:
        callgrid.client().request("GET", "/callgrid/v1/resources/team-b")
    assert gone.value.status == 404

    # A new resource of the same name is a new resource: new id and keys, nothing of the old one's.
    again = callgrid.create_resource("team-b")
    assert again.immutable_id != b.immutable_id and again.access_key != b.access_key
    assert list(_numbers(again).list_purchased_phone_numbers()) == []
    listing = f"{again.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions?{API}"
    assert _arm(again, "GET", listing, token=again.arm_token)["value"] == []
    with pytest.raises(ResourceNotFoundError):
        _identity(again).get_token(CommunicationUserIdentifier(user_b), [CommunicationTokenScope.VOIP])


def test_the_default_resource_is_unaffected_and_reset_forgets_the_others(callgrid: CallgridServer) -> None:
    before = callgrid.client().request("GET", "/callgrid/v1/resources")["value"]
    callgrid.create_resource("team-b")
    callgrid.create_resource("team-c")
    # The default resource's connection string, key and ARM token are what they always were.
    user = _identity(callgrid).create_user().properties["id"]
    assert user.startswith(f"8:acs:{callgrid.env['CALLGRID_IMMUTABLE_RESOURCE_ID']}_")
    callgrid.subscribe("https://unused.invalid/hook", name="default-sub", wait=False)
    callgrid.reset()
    assert callgrid.client().request("GET", "/callgrid/v1/resources")["value"] == before
    with pytest.raises(CallgridHttpError) as gone:
        callgrid.client().request("GET", "/callgrid/v1/resources/team-c")
    assert gone.value.status == 404


def test_resources_outlive_a_restart(tmp_path: Any, callgrid_tls_dir: Any) -> None:
    with CallgridServer(tmp_path / "state", tls_dir=callgrid_tls_dir) as server:
        b = server.create_resource("team-b")
        b.own_number(NUMBER_B)
        server.restart()
        again = server.resource("team-b")
        assert (again.access_key, again.immutable_id) == (b.access_key, b.immutable_id)
        assert [n.phone_number for n in _numbers(again).list_purchased_phone_numbers()] == [NUMBER_B]
        assert list(_numbers(server).list_purchased_phone_numbers()) == []


def test_deliveries_and_dead_letters_are_per_resource(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    c = callgrid.create_resource("team-c")
    with WebhookReceiver() as hook_a, WebhookReceiver(responder=lambda item: (400, None)) as hook_b:
        put_subscription(callgrid, "a-calls", hook_a.url)
        put_subscription(cast(CallgridServer, b), "b-calls", hook_b.url, properties={"deadLetterDestination": _DEAD})
        callgrid.place_call(CALLER, NUMBER_A)
        b.place_call(CALLER, NUMBER_B)

        def dead_letters(target: CallgridServer | CallgridResource) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = target.client().request("GET", "/callgrid/v1/deadLetters")["value"]
            return found

        letters = wait_for(lambda: dead_letters(b))
    assert [d["subscriptionName"] for d in letters] == ["b-calls"]
    assert letters[0]["event"]["topic"] == b.resource_id.lower()

    def deliveries(target: CallgridServer | CallgridResource, query: str = "") -> list[str]:
        rows = target.client().request("GET", "/callgrid/v1/deliveries" + query)["value"]
        return [r["subscriptionId"] for r in rows]

    b_sub = f"{b.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions/b-calls".lower()
    a_sub = f"{callgrid.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions/a-calls".lower()
    assert deliveries(b) == [b_sub]
    assert deliveries(b, "?subscriptionId=" + a_sub) == []
    # The server owner's key sees every resource's deliveries; a third resource sees none of them.
    assert sorted(deliveries(callgrid)) == sorted([a_sub, b_sub])
    assert deliveries(c) == [] and dead_letters(c) == []
    with pytest.raises(CallgridHttpError) as foreign:
        c.client().request("POST", f"/callgrid/v1/deadLetters/{letters[0]['id']}:replay")
    assert foreign.value.status == 404
    replayed = b.client().request("POST", f"/callgrid/v1/deadLetters/{letters[0]['id']}:replay")
    assert replayed["delivery"]["subscriptionId"] == b_sub


_DEAD = {
    "endpointType": "StorageBlob",
    "properties": {
        "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/deadacct",
        "blobContainerName": "dead-letters",
    },
}


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def test_a_bearer_token_acts_as_the_resource_it_was_issued_for(callgrid: CallgridServer) -> None:
    b = callgrid.create_resource("team-b")
    as_b = CommunicationIdentityClient(callgrid.endpoint, CallgridCredential(b.acs_token))
    user_b = as_b.create_user()
    assert user_b.properties["id"].startswith(f"8:acs:{b.immutable_id}_")
    # The default resource's token does not reach B's user; B's token does not reach the default's.
    as_default = CommunicationIdentityClient(callgrid.endpoint, CallgridCredential(callgrid.acs_token))
    with pytest.raises(ResourceNotFoundError):
        as_default.revoke_tokens(user_b)
    user_a = as_default.create_user()
    with pytest.raises(ResourceNotFoundError):
        as_b.revoke_tokens(user_a)
    # A deleted resource's token is worth nothing.
    callgrid.delete_resource("team-b")
    with pytest.raises(ClientAuthenticationError):
        as_b.create_user()
