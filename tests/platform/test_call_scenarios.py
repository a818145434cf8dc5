"""The scenario table (scenarios.md 1): every way an IncomingCall arises, through the official SDK and
callgrid's simulator, with the IncomingCall payload and the callbacks an app written for Azure expects."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from azure.communication.callautomation import (
    CommunicationIdentifier,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import (
    ENTRY_NUMBER,
    PSTN_CALLER,
    TARGET_NUMBER,
    World,
    make_world,
    phone,
)

SIP = {"X-MS-Custom-Ticket": "42"}
VOIP = {"team": "blue"}


@dataclass
class Parties:
    source: str  # raw id of who calls
    entry: str  # raw id the source first calls, where the app answers (unused for "call")
    target: str  # raw id of the scenario's destination


def parties(world: World, pair: str) -> Parties:
    if pair == "identity->identity":
        return Parties(world.user(), world.user(), world.user())
    if pair == "identity->ownedNumber":
        return Parties(world.user(), phone(ENTRY_NUMBER), phone(TARGET_NUMBER))
    return Parties(phone(PSTN_CALLER), phone(ENTRY_NUMBER), phone(TARGET_NUMBER))


def sdk_identifier(raw_id: str) -> CommunicationIdentifier:
    if raw_id.startswith("4:"):
        return PhoneNumberIdentifier(raw_id[2:])
    return CommunicationUserIdentifier(raw_id)


def expected_subject(source: str, target: str) -> str:
    if target.startswith("4:"):
        caller = source[2:] if source.startswith("4:") else source
        return f"/phoneCall/caller/{caller}/recipient/{target[2:]}"
    return f"/caller/{source}/recipient/{target}"


PAIRS = ["identity->identity", "identity->ownedNumber", "pstn->ownedNumber"]
SCENARIOS = ["call", "redirect", "addParticipant", "transfer"]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("pair", PAIRS)
def test_cell(fresh: CallgridServer, webhook: WebhookReceiver, pair: str, scenario: str) -> None:
    world = make_world(fresh, webhook)
    who = parties(world, pair)
    automation = world.automation

    first_target = who.target if scenario == "call" else who.entry
    placed = world.place_call(who.source, first_target, callerDisplayName="Ada")
    first = world.incoming(0)
    assert first.data["to"]["rawId"] == first_target
    assert first.data["from"]["rawId"] == who.source
    assert first.subject == expected_subject(who.source, first_target)
    assert first.data["serverCallId"] == placed["serverCallId"]

    if scenario == "call":
        answered = automation.answer_call(
            first.data["incomingCallContext"], world.callback_url, operation_context="ans"
        )
        types = world.callback_types(answered.call_connection_id, 2)
        assert types == ["CallConnected", "ParticipantsUpdated"]
        event = first
        custom = {"sipHeaders": {}, "voipHeaders": {}}
        participants = [who.source, who.target]
    elif scenario == "redirect":
        automation.redirect_call(first.data["incomingCallContext"], sdk_identifier(who.target))
        event = world.incoming(1)
        answered = automation.answer_call(event.data["incomingCallContext"], world.callback_url)
        assert world.callback_types(answered.call_connection_id, 2) == ["CallConnected", "ParticipantsUpdated"]
        custom = {"sipHeaders": {}, "voipHeaders": {}}
        participants = [who.source, who.target]
    else:
        answered = automation.answer_call(first.data["incomingCallContext"], world.callback_url)
        # As an app must: the call is established (CallConnected) before it adds or transfers; until then
        # ACS answers 8501, and so does callgrid.
        world.callbacks(answered.call_connection_id, 1)
        connection = automation.get_call_connection(answered.call_connection_id)
        world.device(who.target, "answer", delay_ms=2000)
        if scenario == "addParticipant":
            result = connection.add_participant(
                sdk_identifier(who.target),
                operation_context="add",
                invitation_timeout=60,
                sip_headers=SIP,
                voip_headers=VOIP,
            )
            assert result.invitation_id
            assert result.operation_context == "add"
            assert result.participant.identifier.raw_id == who.target
        else:
            transfer = connection.transfer_call_to_participant(
                sdk_identifier(who.target), operation_context="xfer", sip_headers=SIP, voip_headers=VOIP
            )
            assert transfer.operation_context == "xfer"
        event = world.incoming(1)
        custom = {"sipHeaders": SIP, "voipHeaders": VOIP}
        fresh.advance(2)  # the target's device answers after two seconds
        if scenario == "addParticipant":
            callbacks = world.callbacks(answered.call_connection_id, 4)
            assert [c.type.rsplit(".", 1)[1] for c in callbacks] == [
                "CallConnected",
                "ParticipantsUpdated",
                "AddParticipantSucceeded",
                "ParticipantsUpdated",
            ]
            succeeded = callbacks[2]
            assert succeeded.data["operationContext"] == "add"
            assert succeeded.data["participant"]["rawId"] == who.target
            assert succeeded.data["invitationId"] == result.invitation_id
            assert [p["identifier"]["rawId"] for p in callbacks[3].data["participants"]] == [
                who.source,
                who.entry,
                who.target,
            ]
            participants = [who.source, who.entry, who.target]
        else:
            callbacks = world.callbacks(answered.call_connection_id, 4)
            assert [c.type.rsplit(".", 1)[1] for c in callbacks] == [
                "CallConnected",
                "ParticipantsUpdated",
                "CallTransferAccepted",
                "CallDisconnected",
            ]
            accepted = callbacks[2]
            assert accepted.data["operationContext"] == "xfer"
            assert accepted.data["transferTarget"]["rawId"] == who.target
            assert accepted.data["transferee"]["rawId"] == who.source
            participants = [who.source, who.target]

    assert event.event_type == "Microsoft.Communication.IncomingCall"
    assert event.data["to"]["rawId"] == who.target
    assert event.data["from"]["rawId"] == who.source
    assert event.subject == expected_subject(who.source, who.target)
    assert event.data["customContext"] == custom
    assert event.data["serverCallId"] == placed["serverCallId"]
    assert event.data["correlationId"] == placed["correlationId"]
    assert event.data["callerDisplayName"] == "Ada"

    call = world.get_call(placed["serverCallId"])
    assert call["state"] == "connected"
    assert [p["rawId"] for p in call["participants"]] == participants
    assert world.verify_callback_jwt(world.callback_requests()[0])["aud"] == fresh.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
