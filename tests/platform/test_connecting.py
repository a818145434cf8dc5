"""The moment between an app's answer (or connect) and its leg connecting: a caller who hangs up then
leaves the app an AnswerFailed (or ConnectFailed) instead of CallConnected. The caller's simulated
endpoint sets how long connecting takes (`connectDelayMs`), on the virtual clock."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier
from azure.core.exceptions import HttpResponseError

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world, phone


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def answer_slowly(world: World, operation_context: str = "ans") -> tuple[str, str]:
    """The public caller's side takes 2 s to connect once the app answers: (serverCallId, callConnectionId)."""
    world.device(phone(PSTN_CALLER), "ring", connect_delay_ms=2000)
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    answered = world.automation.answer_call(context, world.callback_url, operation_context=operation_context)
    assert answered.call_connection_state == "connecting"
    assert answered.call_connection_id is not None
    return placed["serverCallId"], answered.call_connection_id


def hang_up_caller(world: World, server_call_id: str) -> None:
    world.client.request("POST", f"/callgrid/v1/calls/{server_call_id}:hangUp", {})


def test_the_answered_leg_connects_when_the_callers_side_is_ready(world: World) -> None:
    server_call_id, ccid = answer_slowly(world)
    connection = world.automation.get_call_connection(ccid)
    assert connection.get_call_properties().call_connection_state == "connecting"
    with pytest.raises(HttpResponseError) as early:
        connection.send_dtmf_tones(["one"], PhoneNumberIdentifier(PSTN_CALLER))
    assert (early.value.status_code, early.value.error.code) == (400, "8501")
    world.server.advance(1.999)
    assert world.webhook.callbacks() == []
    world.server.advance(0.001)
    assert world.callback_types(ccid, 2) == ["CallConnected", "ParticipantsUpdated"]
    assert connection.get_call_properties().call_connection_state == "connected"
    assert world.get_call(server_call_id)["state"] == "connected"


def test_a_caller_who_hangs_up_while_the_answer_connects_leaves_answer_failed(world: World) -> None:
    server_call_id, ccid = answer_slowly(world, operation_context="greeting")
    hang_up_caller(world, server_call_id)
    failed = world.callbacks(ccid, 1)[0]
    assert failed.type == "Microsoft.Communication.AnswerFailed"
    assert failed.data["operationContext"] == "greeting"
    assert (failed.data["resultInformation"]["code"], failed.data["resultInformation"]["subCode"]) == (487, 8542)
    world.server.advance(5)  # the connect timer finds the leg gone: no CallConnected follows
    assert [e["type"] for e in world.webhook.callbacks()] == ["Microsoft.Communication.AnswerFailed"]
    assert world.get_call(server_call_id)["state"] == "disconnected"
    with pytest.raises(HttpResponseError) as ended:
        world.automation.get_call_connection(ccid).hang_up(False)
    assert ended.value.error.code == "8528"
    # No call started, so no CallStarted; the call simply never connected.
    assert world.system_events("Microsoft.Communication.CallStarted") == []


def test_an_app_hanging_up_its_connecting_leg_cancels_the_call(world: World) -> None:
    server_call_id, ccid = answer_slowly(world)
    world.automation.get_call_connection(ccid).hang_up(False)
    assert world.callback_types(ccid, 1) == ["CallDisconnected"]
    world.server.advance(5)
    assert len(world.webhook.callbacks()) == 1
    call = world.get_call(server_call_id)
    assert call["state"] == "disconnected"
    assert call["endReason"]["subCode"] == 8542


def test_an_invitee_answering_an_add_participant_connects_or_fails_with_the_call(world: World) -> None:
    world.device(phone(PSTN_CALLER), "ring", connect_delay_ms=1000)
    world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    first = world.automation.answer_call(world.incoming(0).data["incomingCallContext"], world.callback_url)
    world.server.advance(1)
    world.callbacks(first.call_connection_id, 2)
    invitee = world.user()
    connection = world.automation.get_call_connection(first.call_connection_id)
    connection.add_participant(CommunicationUserIdentifier(invitee), operation_context="invite")
    second = world.automation.answer_call(world.incoming(1).data["incomingCallContext"], world.callback_url + "?leg=2")
    assert second.call_connection_state == "connecting"
    world.server.advance(1)
    assert world.callback_types(second.call_connection_id, 2) == ["CallConnected", "ParticipantsUpdated"]
    types = world.callback_types(first.call_connection_id, 4)
    assert types[2:] == ["AddParticipantSucceeded", "ParticipantsUpdated"]


def test_connect_call_fails_when_the_call_ends_before_it_connects(world: World) -> None:
    server_call_id, ccid = answer_slowly(world)
    world.server.advance(2)
    world.callbacks(ccid, 2)
    joined = world.automation.connect_call(
        server_call_id=server_call_id, callback_url=world.callback_url + "?leg=2", operation_context="watch"
    )
    assert joined.call_connection_state == "connecting"
    assert joined.call_connection_id is not None
    hang_up_caller(world, server_call_id)
    failed = world.callbacks(joined.call_connection_id, 1)[0]
    assert failed.type == "Microsoft.Communication.ConnectFailed"
    assert failed.data["operationContext"] == "watch"
    assert failed.data["resultInformation"]["code"] >= 400
    assert world.callback_types(ccid, 3)[2] == "CallDisconnected"
