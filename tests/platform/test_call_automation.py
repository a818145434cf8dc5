"""Call Automation operations beyond the scenario table: create and connect, failures with their result
codes, timeouts on the virtual clock, group calls, bad input that changes nothing, system events."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.eventgrid import EventGridEvent

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, TARGET_NUMBER, World, make_world, phone

EXTERNAL = "+13125550142"
PARTICIPANT_ADDED = "Microsoft.Communication.CallParticipantAdded"


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def answered_pstn_call(world: World) -> tuple[str, str]:
    """A public caller dials the entry number and the app answers: (serverCallId, callConnectionId)."""
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    answered = world.automation.answer_call(context, world.callback_url)
    world.callbacks(answered.call_connection_id, 2)
    return placed["serverCallId"], answered.call_connection_id


def test_create_call_to_an_identity_connects_when_it_answers(world: World) -> None:
    user = world.user()
    world.device(user, "answer", delay_ms=3000)
    result = world.automation.create_call(
        CommunicationUserIdentifier(user), world.callback_url, operation_context="outbound"
    )
    assert result.call_connection_state == "connecting"
    assert [t.raw_id for t in result.targets] == [user]
    incoming = world.incoming(0)
    assert incoming.data["to"]["rawId"] == user
    assert incoming.data["from"]["rawId"].startswith("8:acs:")
    assert incoming.subject == f"/caller/{incoming.data['from']['rawId']}/recipient/{user}"
    world.server.advance(3)
    callbacks = world.callbacks(result.call_connection_id, 2)
    assert [c.type for c in callbacks] == [
        "Microsoft.Communication.CallConnected",
        "Microsoft.Communication.ParticipantsUpdated",
    ]
    assert callbacks[0].data["operationContext"] == "outbound"
    props = world.automation.get_call_connection(result.call_connection_id).get_call_properties()
    assert props.call_connection_state == "connected"
    started = world.webhook.wait_until(lambda: world.system_events("Microsoft.Communication.CallStarted"))
    assert started[0].data["serverCallId"] == result.server_call_id
    added = world.webhook.wait_until(lambda: world.system_events("Microsoft.Communication.CallParticipantAdded"))
    assert [e.data["user"]["communicationIdentifier"]["rawId"] for e in added] == [user]


def test_an_answered_leg_names_its_caller_as_source_and_the_number_as_answered_for(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    props = world.automation.get_call_connection(ccid).get_call_properties()
    assert props.source is not None and props.source.raw_id == phone(PSTN_CALLER)
    assert props.answered_for is not None and props.answered_for.raw_id == phone(ENTRY_NUMBER)
    assert [t.raw_id for t in props.targets] == [phone(PSTN_CALLER)]


def test_an_identity_calling_an_identity_the_app_answers_is_the_source(world: World) -> None:
    caller, callee = world.user(), world.user()
    world.place_call(caller, callee)
    answered = world.automation.answer_call(world.incoming(0).data["incomingCallContext"], world.callback_url)
    world.callbacks(answered.call_connection_id, 1)
    props = world.automation.get_call_connection(answered.call_connection_id).get_call_properties()
    assert props.source is not None and props.source.raw_id == caller
    assert props.answered_for is None  # ACS fills answeredFor for phone numbers only


@pytest.mark.parametrize(
    ("behaviour", "advance", "code", "sub_code"),
    [("decline", 0, 603, 8538), ("busy", 0, 486, 8539), ("ring", 30, 408, 8587)],
)
def test_create_call_fails_when_the_callee_does_not_answer(
    world: World, behaviour: str, advance: float, code: int, sub_code: int
) -> None:
    user = world.user()
    world.device(user, behaviour)
    result = world.automation.create_call(CommunicationUserIdentifier(user), world.callback_url, operation_context="o")
    if advance:
        world.server.advance(advance - 1)
        assert world.get_call(result.server_call_id)["state"] == "ringing"
        world.server.advance(1)
    failed = world.callbacks(result.call_connection_id, 1)[0]
    assert failed.type == "Microsoft.Communication.CreateCallFailed"
    assert failed.data["resultInformation"]["code"] == code
    assert failed.data["resultInformation"]["subCode"] == sub_code
    assert failed.data["operationContext"] == "o"
    assert world.get_call(result.server_call_id)["state"] == "disconnected"


def test_create_call_to_the_public_network_needs_an_owned_caller_id(world: World) -> None:
    target = PhoneNumberIdentifier(EXTERNAL)
    with pytest.raises(HttpResponseError) as missing:
        world.automation.create_call(target, world.callback_url)
    assert (missing.value.status_code, missing.value.error.code) == (400, "8523")
    with pytest.raises(HttpResponseError) as unowned:
        world.automation.create_call(
            target, world.callback_url, source_caller_id_number=PhoneNumberIdentifier("+19995550100")
        )
    assert (unowned.value.status_code, unowned.value.error.code) == (403, "7507")
    world.device(phone(EXTERNAL), "answer")
    result = world.automation.create_call(
        target, world.callback_url, source_caller_id_number=PhoneNumberIdentifier(ENTRY_NUMBER)
    )
    assert world.callback_types(result.call_connection_id, 2) == ["CallConnected", "ParticipantsUpdated"]
    assert world.incoming_count() == 0  # the public network raises no IncomingCall
    call = world.get_call(result.server_call_id)
    assert call["offers"][0]["from"] == phone(ENTRY_NUMBER)


def test_create_call_to_an_unknown_identity_is_not_found(world: World) -> None:
    stranger = world.user()[:-4] + "0000"
    with pytest.raises(ResourceNotFoundError) as info:
        world.automation.create_call(CommunicationUserIdentifier(stranger), world.callback_url)
    assert info.value.error.code == "8522"
    assert world.client.request("GET", "/callgrid/v1/calls")["value"] == []


def test_connect_call_joins_an_established_call(world: World) -> None:
    server_call_id, _ = answered_pstn_call(world)
    props = world.automation.connect_call(
        server_call_id=server_call_id, callback_url=world.callback_url + "?leg=2", operation_context="watch"
    )
    assert props.server_call_id == server_call_id
    callbacks = world.callbacks(props.call_connection_id, 2)
    assert [c.type.rsplit(".", 1)[1] for c in callbacks] == ["CallConnected", "ParticipantsUpdated"]
    assert callbacks[0].data["operationContext"] == "watch"
    with pytest.raises(ResourceNotFoundError):
        world.automation.connect_call(server_call_id="bm8tc3VjaC1jYWxs", callback_url=world.callback_url)


def test_participants_list_get_and_mute(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    listed = list(connection.list_participants())
    assert [p.identifier.raw_id for p in listed] == [phone(PSTN_CALLER), phone(ENTRY_NUMBER)]
    caller = connection.get_participant(PhoneNumberIdentifier(PSTN_CALLER))
    assert caller.identifier.raw_id == phone(PSTN_CALLER)
    assert caller.is_muted is False
    muted = connection.mute_participant(PhoneNumberIdentifier(PSTN_CALLER), operation_context="hush")
    assert muted.operation_context == "hush"
    assert connection.get_participant(PhoneNumberIdentifier(PSTN_CALLER)).is_muted is True
    updated = world.callbacks(ccid, 3)[2]
    assert updated.type == "Microsoft.Communication.ParticipantsUpdated"
    assert updated.data["participants"][0]["isMuted"] is True
    with pytest.raises(ResourceNotFoundError) as info:
        connection.get_participant(PhoneNumberIdentifier(EXTERNAL))
    assert info.value.error.code == "8522"


def test_add_participant_times_out_after_the_invitation_timeout(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    with pytest.raises(HttpResponseError) as too_long:
        connection.add_participant(PhoneNumberIdentifier(TARGET_NUMBER), invitation_timeout=181)
    assert too_long.value.status_code == 400
    connection.add_participant(PhoneNumberIdentifier(TARGET_NUMBER), invitation_timeout=10, operation_context="a")
    world.server.advance(9)
    assert len(world.callbacks(ccid, 2)) == 2
    world.server.advance(1)
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.AddParticipantFailed"
    assert failed.data["resultInformation"]["subCode"] == 8587
    assert failed.data["participant"]["rawId"] == phone(TARGET_NUMBER)
    assert failed.data["operationContext"] == "a"


def test_cancel_add_participant(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    invited = connection.add_participant(PhoneNumberIdentifier(TARGET_NUMBER))
    canceled = connection.cancel_add_participant_operation(invited.invitation_id, operation_context="never mind")
    assert canceled.invitation_id == invited.invitation_id
    event = world.callbacks(ccid, 3)[2]
    assert event.type == "Microsoft.Communication.CancelAddParticipantSucceeded"
    assert event.data["invitationId"] == invited.invitation_id
    assert event.data["operationContext"] == "never mind"
    # The canceled invitation can no longer be answered.
    context = world.incoming(1).data["incomingCallContext"]
    with pytest.raises(ResourceNotFoundError):
        world.automation.answer_call(context, world.callback_url)
    connection.cancel_add_participant_operation(invited.invitation_id)
    assert world.callbacks(ccid, 4)[3].type == "Microsoft.Communication.CancelAddParticipantFailed"
    world.server.advance(60)
    assert len(world.webhook.callbacks()) == 4  # no AddParticipantFailed for a canceled invitation


def test_group_call_remove_and_transfer_need_the_transferee(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    user = world.user()
    world.device(user, "answer")
    connection.add_participant(CommunicationUserIdentifier(user))
    world.callbacks(ccid, 4)
    with pytest.raises(HttpResponseError) as ambiguous:
        connection.transfer_call_to_participant(PhoneNumberIdentifier(TARGET_NUMBER))
    assert ambiguous.value.status_code == 400
    removed = connection.remove_participant(CommunicationUserIdentifier(user), operation_context="bye")
    assert removed.operation_context == "bye"
    events = world.callbacks(ccid, 6)
    assert [e.type.rsplit(".", 1)[1] for e in events[4:]] == ["RemoveParticipantSucceeded", "ParticipantsUpdated"]
    assert [p["identifier"]["rawId"] for p in events[5].data["participants"]] == [
        phone(PSTN_CALLER),
        phone(ENTRY_NUMBER),
    ]
    with pytest.raises(ResourceNotFoundError):
        connection.remove_participant(CommunicationUserIdentifier(user))


def test_transfer_fails_when_the_target_declines_and_the_app_stays(world: World) -> None:
    _, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    world.device(phone(TARGET_NUMBER), "decline")
    connection.transfer_call_to_participant(PhoneNumberIdentifier(TARGET_NUMBER), operation_context="x")
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.CallTransferFailed"
    assert failed.data["resultInformation"]["subCode"] == 8538
    assert connection.get_call_properties().call_connection_state == "connected"


def test_caller_hangs_up_while_ringing(world: World) -> None:
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    world.client.request("POST", f"/callgrid/v1/calls/{placed['serverCallId']}:hangUp")
    with pytest.raises(ResourceNotFoundError) as info:
        world.automation.answer_call(context, world.callback_url)
    assert info.value.error.code == "8522"
    call = world.get_call(placed["serverCallId"])
    assert call["state"] == "disconnected"
    assert call["endReason"]["subCode"] == 8542


def test_a_participant_hangs_up_and_the_app_hears_the_call_end(world: World) -> None:
    server_call_id, ccid = answered_pstn_call(world)
    world.client.request(
        "POST", f"/callgrid/v1/calls/{server_call_id}/participants/{phone(PSTN_CALLER).replace('+', '%2B')}:hangUp"
    )
    assert world.callbacks(ccid, 3)[2].type == "Microsoft.Communication.CallDisconnected"
    ended = world.webhook.wait_until(lambda: world.system_events("Microsoft.Communication.CallEnded"))
    assert ended[0].data["serverCallId"] == server_call_id


def test_bad_input_changes_nothing(world: World) -> None:
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    with pytest.raises(HttpResponseError) as too_long:
        world.automation.answer_call(context, world.callback_url, operation_context="x" * 5001)
    assert too_long.value.status_code == 400
    assert world.get_call(placed["serverCallId"])["state"] == "ringing"
    answered = world.automation.answer_call(context, world.callback_url)
    with pytest.raises(ResourceNotFoundError) as second:
        world.automation.answer_call(context, world.callback_url)
    assert second.value.error.code == "8522"
    connection = world.automation.get_call_connection(answered.call_connection_id)
    with pytest.raises(HttpResponseError) as unknown:
        connection.add_participant(CommunicationUserIdentifier(world.user()[:-4] + "0000"))
    assert unknown.value.status_code == 404
    connection.hang_up(is_for_everyone=True)
    world.callbacks(answered.call_connection_id, 3)
    with pytest.raises(HttpResponseError) as ended:
        connection.add_participant(PhoneNumberIdentifier(TARGET_NUMBER))
    assert (ended.value.status_code, ended.value.error.code) == (400, "8528")
    with pytest.raises(HttpResponseError):
        connection.hang_up(is_for_everyone=False)
    assert len(world.get_call(placed["serverCallId"])["offers"]) == 1


def test_transfer_out_of_a_group_call_moves_the_transferee(world: World) -> None:
    server_call_id, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    user = world.user()
    world.device(user, "answer")
    world.device(phone(TARGET_NUMBER), "answer")
    connection.add_participant(CommunicationUserIdentifier(user))
    world.callbacks(ccid, 4)
    connection.transfer_call_to_participant(
        PhoneNumberIdentifier(TARGET_NUMBER), transferee=CommunicationUserIdentifier(user), operation_context="out"
    )
    incoming = world.incoming(2)
    assert (incoming.data["from"]["rawId"], incoming.data["to"]["rawId"]) == (user, phone(TARGET_NUMBER))
    events = world.callbacks(ccid, 6)
    assert [e.type.rsplit(".", 1)[1] for e in events[4:]] == ["CallTransferAccepted", "ParticipantsUpdated"]
    assert events[4].data["transferee"]["rawId"] == user
    assert [p["identifier"]["rawId"] for p in events[5].data["participants"]] == [
        phone(PSTN_CALLER),
        phone(ENTRY_NUMBER),
    ]
    assert connection.get_call_properties().call_connection_state == "connected"
    calls = world.client.request("GET", "/callgrid/v1/calls")["value"]
    onward = next(c for c in calls if c["serverCallId"] != server_call_id)
    assert [p["rawId"] for p in onward["participants"]] == [user, phone(TARGET_NUMBER)]
    assert onward["state"] == "connected"
    assert_onward_call_started(world, onward["serverCallId"], user, [user])


def assert_onward_call_started(world: World, server_call_id: str, started_by: str, added: list[str]) -> None:
    """The new call of a group transfer raises CallStarted and CallParticipantAdded like any call."""

    def of_onward(event_type: str) -> list[EventGridEvent]:
        return [e for e in world.system_events(event_type) if e.data["serverCallId"] == server_call_id]

    started = world.webhook.wait_until(lambda: of_onward("Microsoft.Communication.CallStarted"))
    assert len(started) == 1
    assert started[0].subject == f"call/{server_call_id}/startedBy/{started_by}"
    assert started[0].data["startedBy"]["communicationIdentifier"]["rawId"] == started_by
    joined = world.webhook.wait_until(
        lambda: len(of_onward(PARTICIPANT_ADDED)) >= len(added) and of_onward(PARTICIPANT_ADDED)
    )
    # Event Grid deliveries are separate requests: their order is not guaranteed.
    assert sorted(e.data["user"]["communicationIdentifier"]["rawId"] for e in joined) == sorted(added)


def test_an_app_answering_a_group_transfer_joins_the_new_call(world: World) -> None:
    server_call_id, ccid = answered_pstn_call(world)
    connection = world.automation.get_call_connection(ccid)
    user, agent = world.user(), world.user()
    world.device(user, "answer")
    connection.add_participant(CommunicationUserIdentifier(user))
    world.callbacks(ccid, 4)
    connection.transfer_call_to_participant(
        CommunicationUserIdentifier(agent), transferee=CommunicationUserIdentifier(user)
    )
    context = world.incoming(2).data["incomingCallContext"]
    leg = world.automation.answer_call(context, world.callback_url)
    assert leg.server_call_id != server_call_id
    assert leg.call_connection_id is not None
    events = world.callbacks(leg.call_connection_id, 2)
    assert [e.type.rsplit(".", 1)[1] for e in events] == ["CallConnected", "ParticipantsUpdated"]
    assert [p["identifier"]["rawId"] for p in events[1].data["participants"]] == [user, agent]
    props = world.automation.get_call_connection(leg.call_connection_id).get_call_properties()
    assert props.server_call_id == leg.server_call_id
    assert world.callbacks(ccid, 6)[4].type == "Microsoft.Communication.CallTransferAccepted"
    assert_onward_call_started(world, leg.server_call_id, user, [user, agent])
