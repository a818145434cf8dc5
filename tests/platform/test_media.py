"""Media through the SDK: play files and spoken text for their real length on the virtual clock, DTMF
recognition of keys the simulated caller presses, continuous DTMF, sending tones, and the failures ACS
reports. What callers say and hear is in tests/media/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    DtmfTone,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    TextSource,
)
from azure.communication.callautomation._generated.models import RecognizeCompleted
from azure.core.exceptions import HttpResponseError

from callgrid.platform.audio import wav_bytes
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import FileServer
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world, phone

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

MP3_FRAME = b"\xff\xfb\x90\xc0" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono, silent
FILES = {
    "/prompt.wav": wav_bytes(2.5),
    "/music.mp3": MP3_FRAME * 115,  # 115 frames of 417 bytes at 128 kbit/s: 2.997 s
    "/noise.wav": b"RIFF....WAVEjunk",
}


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer(FILES)
    yield server
    server.close()


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def answered(world: World) -> tuple[str, str]:
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    ccid = world.automation.answer_call(context, world.callback_url).call_connection_id
    assert ccid is not None
    world.callbacks(ccid, 2)
    return placed["serverCallId"], ccid


def types_after(world: World, ccid: str, count: int) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in world.callbacks(ccid, 2 + count)[2:]]


def press(world: World, server_call_id: str, tones: str) -> None:
    raw = phone(PSTN_CALLER).replace("+", "%2B")
    world.client.request("POST", f"/callgrid/v1/calls/{server_call_id}/participants/{raw}:sendDtmf", {"tones": tones})


def test_play_completes_after_the_files_real_durations(world: World, files: FileServer) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.play_media_to_all(
        [FileSource(files.url("/prompt.wav")), FileSource(files.url("/music.mp3"))], operation_context="hello"
    )
    started = world.callbacks(ccid, 3)[2]
    assert started.type == "Microsoft.Communication.PlayStarted"
    assert started.data["operationContext"] == "hello"
    world.server.advance(5.4)  # 2.5 s of WAV and 2.997 s of MP3
    assert len(world.webhook.callbacks()) == 3
    world.server.advance(0.2)
    completed = world.callbacks(ccid, 4)[3]
    assert completed.type == "Microsoft.Communication.PlayCompleted"
    assert completed.data["resultInformation"]["code"] == 200


def test_play_failures_name_the_source(world: World, files: FileServer) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.play_media_to_all([FileSource(files.url("/prompt.wav")), FileSource(files.url("/missing.wav"))])
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.PlayFailed"
    assert failed.data["failedPlaySourceIndex"] == 1
    assert failed.data["resultInformation"]["subCode"] == 8536
    connection.play_media_to_all([FileSource(files.url("/noise.wav"))])
    invalid = world.callbacks(ccid, 4)[3]
    assert invalid.data["resultInformation"]["subCode"] == 8535
    # Text is spoken (see tests/media/test_listening.py for what the caller hears).
    connection.play_media_to_all([TextSource(text="Hello", voice_name="en-US-NancyNeural")])
    tts = world.callbacks(ccid, 5)[4]
    assert tts.type == "Microsoft.Communication.PlayStarted"


def test_loop_plays_until_an_interrupting_play_cancels_it(world: World, files: FileServer) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.play_media_to_all([FileSource(files.url("/prompt.wav"))], loop=True, operation_context="hold music")
    world.server.advance(60)
    assert types_after(world, ccid, 1) == ["PlayStarted"]
    # A play to some participants queues (the SDK never lets it interrupt); one to all may barge in.
    connection.play_media(
        [FileSource(files.url("/prompt.wav"))], play_to=[PhoneNumberIdentifier(PSTN_CALLER)], operation_context="queued"
    )
    connection.play_media_to_all(
        [FileSource(files.url("/prompt.wav"))], interrupt_call_media_operation=True, operation_context="urgent"
    )
    events = world.callbacks(ccid, 5)
    assert [e.type.rsplit(".", 1)[1] for e in events[2:]] == ["PlayStarted", "PlayCanceled", "PlayStarted"]
    assert [e.data["operationContext"] for e in events[2:]] == ["hold music", "hold music", "urgent"]
    world.server.advance(2.5)
    events = world.callbacks(ccid, 7)
    assert [e.type.rsplit(".", 1)[1] for e in events[5:]] == ["PlayCompleted", "PlayStarted"]
    assert [e.data["operationContext"] for e in events[5:]] == ["urgent", "queued"]


def test_recognize_dtmf_until_the_stop_tone(world: World, files: FileServer) -> None:
    server_call_id, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(
        RecognizeInputType.DTMF,
        PhoneNumberIdentifier(PSTN_CALLER),
        play_prompt=FileSource(files.url("/prompt.wav")),
        dtmf_max_tones_to_collect=6,
        dtmf_stop_tones=[DtmfTone.POUND],
        initial_silence_timeout=10,
        operation_context="pin",
    )
    world.server.advance(2.5)  # the prompt plays out
    press(world, server_call_id, "42#")
    completed = world.callbacks(ccid, 3)[2]
    assert completed.type == "Microsoft.Communication.RecognizeCompleted"
    assert completed.data["recognitionType"] == "dtmf"
    assert completed.data["dtmfResult"]["tones"] == ["four", "two"]
    assert completed.data["resultInformation"]["subCode"] == 8514
    assert completed.data["operationContext"] == "pin"


def test_recognize_dtmf_timeouts(world: World) -> None:
    server_call_id, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    connection.start_recognizing_media(RecognizeInputType.DTMF, caller, initial_silence_timeout=10)
    world.server.advance(9.9)
    assert len(world.webhook.callbacks()) == 2
    world.server.advance(0.1)
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.RecognizeFailed"
    assert failed.data["resultInformation"]["subCode"] == 8510

    connection.start_recognizing_media(
        RecognizeInputType.DTMF, caller, dtmf_max_tones_to_collect=4, dtmf_inter_tone_timeout=3
    )
    press(world, server_call_id, "7")
    world.server.advance(3)
    partial = world.callbacks(ccid, 4)[3]
    assert partial.type == "Microsoft.Communication.RecognizeCompleted"
    assert partial.data["dtmfResult"]["tones"] == ["seven"]
    assert partial.data["resultInformation"]["subCode"] == 8532

    connection.start_recognizing_media(RecognizeInputType.DTMF, caller, dtmf_max_tones_to_collect=2)
    press(world, server_call_id, "123")
    full = world.callbacks(ccid, 5)[4]
    assert full.data["dtmfResult"]["tones"] == ["one", "two"]
    assert full.data["resultInformation"]["subCode"] == 8531


def test_speech_recognition_times_out_on_silence_and_cancel_all(world: World) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(RecognizeInputType.SPEECH, PhoneNumberIdentifier(PSTN_CALLER))
    world.server.advance(5)  # the caller says nothing
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.RecognizeFailed"
    assert failed.data["resultInformation"]["subCode"] == 8510
    connection.start_recognizing_media(
        RecognizeInputType.DTMF, PhoneNumberIdentifier(PSTN_CALLER), operation_context="menu"
    )
    connection.cancel_all_media_operations()
    canceled = world.callbacks(ccid, 4)[3]
    assert canceled.type == "Microsoft.Communication.RecognizeCanceled"
    assert canceled.data["operationContext"] == "menu"
    world.server.advance(30)
    assert len(world.webhook.callbacks()) == 4


def test_continuous_dtmf_and_send_tones(world: World) -> None:
    server_call_id, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    connection.start_continuous_dtmf_recognition(caller, operation_context="keys")
    press(world, server_call_id, "9*")
    received = world.callbacks(ccid, 4)[2:]
    assert [(e.data["sequenceId"], e.data["tone"]) for e in received] == [(1, "nine"), (2, "asterisk")]
    connection.stop_continuous_dtmf_recognition(caller)
    assert world.callbacks(ccid, 5)[4].type == "Microsoft.Communication.ContinuousDtmfRecognitionStopped"
    result = connection.send_dtmf_tones([DtmfTone.ONE, DtmfTone.TWO], caller, operation_context="send")
    assert result.operation_context == "send"
    world.server.advance(0.4)
    sent = world.callbacks(ccid, 6)[5]
    assert sent.type == "Microsoft.Communication.SendDtmfTonesCompleted"
    assert sent.data["operationContext"] == "send"


def test_a_preview_api_versions_tone_events_keep_its_shape(world: World) -> None:
    # An app on SDK 1.1.0b1 (api-version 2023-06-15-preview) reads the key under toneInfo; 2023-10-15 on
    # reads it flat. Each gets the shape of the api-version that started the recognition.
    server_call_id, ccid = answered(world)
    preview = CallAutomationClient.from_connection_string(
        world.server.connection_string, api_version="2023-06-15-preview", retry_total=0
    )
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    preview.get_call_connection(ccid).start_continuous_dtmf_recognition(caller, operation_context="old")
    press(world, server_call_id, "5")
    old = world.callbacks(ccid, 3)[2].data
    assert old["toneInfo"] == {"sequenceId": 1, "tone": "five"} and "tone" not in old
    assert old["version"] == "2023-06-15-preview"
    world.automation.get_call_connection(ccid).start_continuous_dtmf_recognition(caller, operation_context="new")
    press(world, server_call_id, "6")
    new = world.callbacks(ccid, 4)[3].data
    assert (new["sequenceId"], new["tone"]) == (1, "six") and "toneInfo" not in new


MENU = [
    RecognitionChoice(label="Sales", phrases=["sales", "buy"], tone=DtmfTone.ONE),
    RecognitionChoice(label="Support", phrases=["support", "help"], tone=DtmfTone.TWO),
    RecognitionChoice(label="Operator", phrases=["operator"]),
]


def test_choices_match_the_tone_pressed(world: World, files: FileServer) -> None:
    server_call_id, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    connection.start_recognizing_media(
        RecognizeInputType.CHOICES,
        caller,
        choices=MENU,
        play_prompt=FileSource(files.url("/prompt.wav")),
        interrupt_prompt=True,
        operation_context="menu",
    )
    press(world, server_call_id, "2")  # during the prompt, which may be interrupted
    completed = world.callbacks(ccid, 3)[2]
    assert completed.type == "Microsoft.Communication.RecognizeCompleted"
    model = RecognizeCompleted.deserialize(completed.data)
    assert model.recognition_type == "choices"
    assert model.choice_result is not None and model.choice_result.label == "Support"
    # A keypress names the choice's first phrase too (Microsoft's samples read the phrase).
    assert model.choice_result.recognized_phrase == "support"
    assert model.result_information is not None and model.result_information.sub_code == 8533
    assert model.operation_context == "menu"

    connection.start_recognizing_media(RecognizeInputType.CHOICES, caller, choices=MENU, operation_context="again")
    press(world, server_call_id, "9")
    failed = world.callbacks(ccid, 4)[3]
    assert failed.type == "Microsoft.Communication.RecognizeFailed"
    assert failed.data["resultInformation"]["subCode"] == 8534
    assert failed.data["operationContext"] == "again"

    connection.start_recognizing_media(RecognizeInputType.CHOICES, caller, choices=MENU, initial_silence_timeout=5)
    world.server.advance(5)
    silent = world.callbacks(ccid, 5)[4]
    assert silent.data["resultInformation"]["subCode"] == 8510


def test_choices_without_tones_or_with_bad_ones(world: World) -> None:
    _, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    caller = PhoneNumberIdentifier(PSTN_CALLER)
    spoken_only = [RecognitionChoice(label="Yes", phrases=["yes"]), RecognitionChoice(label="No", phrases=["no"])]
    connection.start_recognizing_media(RecognizeInputType.CHOICES, caller, choices=spoken_only)
    world.server.advance(5)  # listened for speech; nobody spoke
    failed = world.callbacks(ccid, 3)[2]
    assert failed.type == "Microsoft.Communication.RecognizeFailed"
    assert failed.data["resultInformation"]["subCode"] == 8510
    twice = [
        RecognitionChoice(label="A", phrases=["a"], tone="one"),
        RecognitionChoice(label="B", phrases=["b"], tone="one"),
    ]
    with pytest.raises(HttpResponseError) as error:
        connection.start_recognizing_media(RecognizeInputType.CHOICES, caller, choices=twice)
    assert error.value.status_code == 400
    assert "used twice" in str(error.value)
    with pytest.raises(HttpResponseError) as error:
        connection.start_recognizing_media(RecognizeInputType.CHOICES, caller, choices=[])
    assert error.value.status_code == 400
    world.server.advance(30)
    assert len(world.webhook.callbacks()) == 3


def test_speech_or_dtmf_accepts_its_dtmf_half(world: World) -> None:
    server_call_id, ccid = answered(world)
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(
        RecognizeInputType.SPEECH_OR_DTMF,
        PhoneNumberIdentifier(PSTN_CALLER),
        dtmf_max_tones_to_collect=3,
        operation_context="account",
    )
    press(world, server_call_id, "507")
    completed = world.callbacks(ccid, 3)[2]
    assert completed.type == "Microsoft.Communication.RecognizeCompleted"
    assert completed.data["recognitionType"] == "dtmf"
    assert completed.data["dtmfResult"]["tones"] == ["five", "zero", "seven"]
    assert completed.data["resultInformation"]["subCode"] == 8531
