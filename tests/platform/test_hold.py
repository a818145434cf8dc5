"""Hold and unhold through the SDK: isOnHold in ParticipantsUpdated and list_participants, HoldFailed when
the target is not in the call or its music cannot be played."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import FileSource, PhoneNumberIdentifier
from azure.core.exceptions import HttpResponseError

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world, phone
from tests.platform.test_media import FileServer, answered, files

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

__all__ = ["files"]  # the fixture, shared with test_media


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def on_hold(event_participants: list[dict[str, object]]) -> dict[str, object]:
    return {p["identifier"]["rawId"]: p["isOnHold"] for p in event_participants}  # type: ignore[index]


def test_hold_and_unhold_show_in_participants(world: World, files: FileServer) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    connection.hold(caller, play_source=FileSource(files.url("/music.mp3")), operation_context="hold")
    updated = world.callbacks(ccid, 3)[2]
    assert updated.type == "Microsoft.Communication.ParticipantsUpdated"
    assert on_hold(updated.data["participants"]) == {phone(PSTN_CALLER): True, phone(ENTRY_NUMBER): False}
    assert connection.get_participant(caller).is_on_hold is True
    assert [p.is_on_hold for p in connection.list_participants()] == [True, False]
    connection.hold(caller)  # already held: nothing changes, nothing is sent
    connection.unhold(caller, operation_context="back")
    resumed = world.callbacks(ccid, 4)[3]
    assert on_hold(resumed.data["participants"])[phone(PSTN_CALLER)] is False
    assert resumed.data["sequenceNumber"] == updated.data["sequenceNumber"] + 1
    assert connection.get_participant(caller).is_on_hold is False


def test_hold_failures_are_reported_as_hold_failed(world: World, files: FileServer) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.hold(PhoneNumberIdentifier("+19995550123"), operation_context="nobody")
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.HoldFailed"
    assert failed.data["operationContext"] == "nobody"
    assert failed.data["resultInformation"]["subCode"] == 8522
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    connection.hold(
        caller, play_source=FileSource(files.url("/missing.wav")), operation_callback_url=world.callback_url + "?op=1"
    )
    no_music = world.callbacks(ccid, 4)[3]
    assert no_music.type == "Microsoft.Communication.HoldFailed"
    assert no_music.data["resultInformation"]["subCode"] == 8536
    assert any(r.path.endswith("?op=1") for r in world.callback_requests())
    assert connection.get_participant(caller).is_on_hold is False
    with pytest.raises(HttpResponseError) as own:
        connection.hold(PhoneNumberIdentifier(ENTRY_NUMBER))
    assert (own.value.status_code, own.value.error.code) == (400, "8523")
    with pytest.raises(HttpResponseError) as stranger:
        connection.unhold(PhoneNumberIdentifier("+19995550123"))
    assert stranger.value.status_code == 404
    connection.hang_up(True)
    with pytest.raises(HttpResponseError) as ended:
        connection.hold(caller)
    assert ended.value.error.code == "8528"
