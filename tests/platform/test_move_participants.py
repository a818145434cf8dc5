"""Move participants (SDK 1.6 `move_participants`): a caller waiting in one call joins another, and hears it."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import PhoneNumberIdentifier
from azure.core.exceptions import HttpResponseError

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import chirp, find, heard, play, wait
from tests.platform.calling_support import (
    ENTRY_NUMBER,
    PSTN_CALLER,
    TARGET_NUMBER,
    World,
    make_world,
    phone,
)

OTHER_CALLER = "+12065550111"


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def answer(world: World, caller: str, number: str, index: int) -> tuple[str, str]:
    placed = world.place_call(caller, number)
    context = world.incoming(index).data["incomingCallContext"]
    ccid = world.automation.answer_call(context, world.callback_url).call_connection_id
    assert ccid is not None
    world.callbacks(ccid, 2)
    return placed["serverCallId"], ccid


def test_a_waiting_caller_moves_into_another_call(world: World) -> None:
    lobby_call, lobby = answer(world, PSTN_CALLER, ENTRY_NUMBER, 0)
    main_call, main = answer(world, OTHER_CALLER, TARGET_NUMBER, 1)
    connection = world.automation.get_call_connection(main)
    result = connection.move_participants(
        [PhoneNumberIdentifier(PSTN_CALLER)], from_call_id=lobby, operation_context="to the meeting"
    )
    assert [p.identifier.raw_id for p in result.participants] == [phone(PSTN_CALLER)]
    assert result.from_call == lobby
    assert result.operation_context == "to the meeting"

    def moved() -> dict[str, object] | None:
        for e in world.webhook.callbacks():
            if e["type"] == "Microsoft.Communication.MoveParticipantSucceeded":
                return dict(e["data"])
        return None

    succeeded = world.webhook.wait_until(moved)
    assert succeeded["callConnectionId"] == main
    assert succeeded["participant"]["rawId"] == phone(PSTN_CALLER)  # type: ignore[index]
    assert succeeded["fromCall"] == lobby
    assert succeeded["operationContext"] == "to the meeting"
    raw_ids = {p.identifier.raw_id for p in connection.list_participants()}
    assert raw_ids == {phone(PSTN_CALLER), phone(OTHER_CALLER), phone(TARGET_NUMBER)}
    # The lobby call had the caller and the app: with the caller gone, it ends.
    assert world.get_call(lobby_call)["state"] == "disconnected"

    # The moved caller is in the call's audio now: they hear the other caller.
    signal = chirp(0.8)
    play(world, main_call, signal, raw_id=phone(OTHER_CALLER))
    wait(lambda: find(signal, heard(world, main_call))[1] > 0.95 or None, what="the other caller's voice")


def test_moves_that_cannot_be(world: World) -> None:
    _, lobby = answer(world, PSTN_CALLER, ENTRY_NUMBER, 0)
    _, main = answer(world, OTHER_CALLER, TARGET_NUMBER, 1)
    connection = world.automation.get_call_connection(main)
    with pytest.raises(HttpResponseError) as error:
        connection.move_participants([PhoneNumberIdentifier("+19995550000")], from_call_id=lobby)
    assert error.value.status_code == 404
    with pytest.raises(HttpResponseError) as error:
        connection.move_participants([PhoneNumberIdentifier(OTHER_CALLER)], from_call_id=main)
    assert error.value.status_code == 400
    with pytest.raises(HttpResponseError) as error:
        connection.move_participants([PhoneNumberIdentifier(PSTN_CALLER)], from_call_id="no-such-call")
    assert error.value.status_code == 404
