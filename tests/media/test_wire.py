"""The WebSocket frames of media streaming and transcription: built as ACS sends them, read the way
Microsoft's SDKs and samples read them, and app frames in every casing the SDKs write parsed back.

The Python SDK 1.6 has no streaming-data parser (apps index the JSON themselves), so the checks here
follow the Python samples' own access patterns and use the SDK's `identifier_from_raw_id`, as they do."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier
from azure.communication.callautomation._shared.models import identifier_from_raw_id

from callgrid.media import wire
from callgrid.media.wire import (
    AudioData,
    AudioMetadata,
    DtmfData,
    OutAudioData,
    OutStopAudio,
    TranscriptionData,
    TranscriptionMetadata,
    WireError,
    WordData,
)

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

TS = datetime(2024, 11, 15, 19, 16, 12, 925_431, tzinfo=UTC)
PCM = bytes(range(256)) * 5  # 1280 bytes: two 16 kHz frames


# --- frames ACS sends -----------------------------------------------------------------------------------


def test_audio_metadata_matches_the_documented_payload() -> None:
    frame = json.loads(AudioMetadata(subscription_id="89e8cb59-b991-48b0-b154-1db84f16a077").to_json())
    assert frame == {
        "kind": "AudioMetadata",
        "audioMetadata": {
            "subscriptionId": "89e8cb59-b991-48b0-b154-1db84f16a077",
            "encoding": "PCM",
            "sampleRate": 16000,
            "channels": 1,
            "length": 640,
        },
    }
    assert json.loads(AudioMetadata("s", sample_rate=24000).to_json())["audioMetadata"]["length"] == 960


def test_audio_data_has_the_documented_keys_and_formats() -> None:
    frame = json.loads(AudioData(PCM, TS, participant_raw_id="8:acs:abc", silent=False).to_json())
    assert frame["kind"] == "AudioData"
    body = frame["audioData"]
    assert list(body) == ["timestamp", "participantRawID", "data", "silent"]
    assert body["timestamp"] == "2024-11-15T19:16:12.925Z"
    assert base64.b64decode(body["data"]) == PCM
    assert body["silent"] is False


def test_mixed_audio_leaves_the_participant_out_but_always_says_silent() -> None:
    body = json.loads(AudioData(bytes(640), TS, silent=True).to_json())["audioData"]
    assert "participantRawID" not in body
    assert body["silent"] is True


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert wire.format_timestamp(datetime(2024, 1, 1, 2, 0, 0, 1500, tzinfo=plus_two)) == "2024-01-01T00:00:00.001Z"
    with pytest.raises(ValueError):
        wire.format_timestamp(datetime(2024, 1, 1))  # naive: Java's parser needs an offset


def test_transcription_frames_have_the_documented_shape() -> None:
    meta = json.loads(TranscriptionMetadata("sub", "en-US", "conn", "corr").to_json())
    assert meta == {
        "kind": "TranscriptionMetadata",
        "transcriptionMetadata": {
            "subscriptionId": "sub",
            "locale": "en-US",
            "callConnectionId": "conn",
            "correlationId": "corr",
        },
    }
    data = TranscriptionData(
        text="Testing transcription.",
        confidence=0.87,
        offset=309058340,
        duration=wire.seconds_to_ticks(3.16),
        participant_raw_id="4:+14255550123",
        words=(WordData("testing", 309058340, 4_000_000), WordData("transcription", 313058340, 8_000_000)),
    )
    body = json.loads(data.to_json())["transcriptionData"]
    assert body == {
        "text": "Testing transcription.",
        "format": "display",
        "confidence": 0.87,
        "offset": 309058340,
        "duration": 31600000,
        "words": [
            {"text": "testing", "offset": 309058340, "duration": 4000000},
            {"text": "transcription", "offset": 313058340, "duration": 8000000},
        ],
        "participantRawID": "4:+14255550123",
        "resultStatus": "Final",
    }


def test_transcription_without_words_still_sends_an_array() -> None:
    frame = TranscriptionData("hi", 0.5, 0, 1, "8:acs:x", result_status="Intermediate")
    body = json.loads(frame.to_json())["transcriptionData"]
    assert body["words"] == []
    assert body["resultStatus"] == "Intermediate"


def test_dtmf_data_carries_the_key() -> None:
    assert json.loads(DtmfData("3").to_json()) == {"kind": "DtmfData", "dtmfData": {"data": "3"}}
    full = json.loads(DtmfData("#", TS, "4:+14255550123").to_json())["dtmfData"]
    assert full == {"data": "#", "timestamp": "2024-11-15T19:16:12.925Z", "participantRawID": "4:+14255550123"}
    with pytest.raises(ValueError):
        DtmfData("pound").to_json()


@pytest.mark.parametrize(
    "bad",
    [
        lambda: TranscriptionData("x", 1.5, 0, 0, "8:acs:x").to_json(),
        lambda: TranscriptionData("x", float("nan"), 0, 0, "8:acs:x").to_json(),
        lambda: TranscriptionData("x", 0.5, -1, 0, "8:acs:x").to_json(),
        lambda: TranscriptionData("x", 0.5, 0, 0, "8:acs:x", result_status="final").to_json(),  # type: ignore[arg-type]
        lambda: AudioMetadata("s", sample_rate=0).to_json(),
    ],
)
def test_builders_refuse_values_no_parser_would_accept(bad: Any) -> None:
    with pytest.raises(ValueError):
        bad()


# --- read as Microsoft's samples and SDK parsers read them ---------------------------------------------


def test_python_voice_sample_reads_our_audio() -> None:
    # communication-services-python-quickstarts/callautomation-azure-openai-voice: acs_to_oai.
    frame = AudioData(PCM, TS, participant_raw_id="8:acs:abc").to_json()
    data = json.loads(frame)
    assert data["kind"] == "AudioData"
    section = data.get("audioData", {})
    assert not section.get("silent", True)  # the sample drops audio without `silent: false`
    assert base64.b64decode(section.get("data")) == PCM


def test_python_transcription_sample_reads_our_transcripts() -> None:
    # communication-services-python-quickstarts/callautomation-live-transcription: transcriptionDataHandler.
    meta = json.loads(TranscriptionMetadata("sub", "en-US", "conn", "corr").to_json())
    assert meta["kind"] == "TranscriptionMetadata"
    for key in ("subscriptionId", "locale", "callConnectionId", "correlationId"):
        assert meta["transcriptionMetadata"][key]
    for raw_id, expected in (
        ("4:+14255550123", PhoneNumberIdentifier("+14255550123")),
        ("8:acs:resource_user", CommunicationUserIdentifier("8:acs:resource_user")),
    ):
        frame = json.loads(
            TranscriptionData("Hello world.", 0.9, 10, 20, raw_id, words=(WordData("hello", 10, 5),)).to_json()
        )
        body = frame["transcriptionData"]
        assert identifier_from_raw_id(body["participantRawID"]) == expected
        for key in ("text", "format", "confidence", "offset", "duration", "resultStatus"):
            assert key in body
        for word in body["words"]:
            assert {word["text"], word["offset"], word["duration"]} == {"hello", 10, 5}


@pytest.mark.parametrize(
    "frame",
    [
        AudioMetadata("sub", sample_rate=24000, length=960),
        AudioData(PCM, TS.replace(microsecond=925_000), participant_raw_id="8:acs:abc", silent=False),
        AudioData(bytes(640), TS.replace(microsecond=0), silent=True),
        DtmfData("7"),
        DtmfData("*", TS.replace(microsecond=1000), "4:+14255550123"),
        TranscriptionMetadata("sub", "fr-FR", "conn", "corr", speech_model_endpoint_id="model"),
        TranscriptionData("Bonjour.", 0.75, 1, 2, "8:acs:x", words=(WordData("bonjour", 1, 2),)),
        TranscriptionData("Bon", 0.0, 0, 0, "8:acs:x", result_status="Intermediate"),
    ],
)
def test_frames_round_trip(frame: wire.StreamingData) -> None:
    text = frame.to_json()
    parsed = wire.parse_streaming_data(text)
    assert parsed == frame
    assert wire.parse_streaming_data(text.encode()) == frame


def test_timestamps_parse_as_dotnet_and_java_need_them() -> None:
    body = json.loads(AudioData(b"\x00\x00", TS).to_json())["audioData"]
    parsed = datetime.fromisoformat(body["timestamp"])
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == TS.replace(microsecond=925_000)


@pytest.mark.parametrize(
    "frame",
    [
        '{"kind":"AudioData","audioData":{"data":"AAA=","timestamp":"2024-11-15T19:16:12.925","silent":false}}',
        '{"kind":"AudioData","audioData":{"data":"not base64!","timestamp":"2024-11-15T19:16:12.925Z","silent":false}}',
        '{"kind":"TranscriptionData","transcriptionData":{"text":"x","format":"display","confidence":1,'
        '"offset":0,"duration":0,"participantRawID":"8:acs:x","resultStatus":"Final"}}',
        '{"kind":"TranscriptionData","transcriptionData":{"text":"x","format":"display","confidence":"1",'
        '"offset":0,"duration":0,"words":[],"participantRawID":"8:acs:x","resultStatus":"Final"}}',
        '{"kind":"DtmfData","dtmfData":{"data":"three"}}',
        '{"kind":"CaptionsData","captionsData":{}}',
        '{"Kind":"AudioMetadata","AudioMetadata":{}}',  # the SDK parsers are case-sensitive
    ],
)
def test_reading_acs_frames_refuses_what_sdk_parsers_choke_on(frame: str) -> None:
    with pytest.raises(WireError):
        wire.parse_streaming_data(frame)


# --- frames an app sends back (bidirectional) -----------------------------------------------------------

B64 = base64.b64encode(PCM).decode()


@pytest.mark.parametrize(
    "frame",
    [
        # The brief's / Java SDK's camelCase.
        {"kind": "AudioData", "audioData": {"data": B64}},
        {"kind": "AudioData", "audioData": {"data": B64, "timestamp": None, "participant": None, "isSilent": False}},
        # Microsoft's Python sample and docs: PascalCase keys, `Data`.
        {"Kind": "AudioData", "AudioData": {"Data": B64}, "StopAudio": None},
        # .NET OutStreamingData serialised with System.Text.Json defaults.
        {
            "Kind": "AudioData",
            "AudioData": {
                "Data": B64,
                "Timestamp": "0001-01-01T00:00:00+00:00",
                "Participant": None,
                "IsSilent": False,
                "Mark": None,
            },
            "StopAudio": None,
            "MarkData": None,
        },
        # JS OutStreamingData: the kind is "audioData" and an empty stopAudio rides along.
        {"kind": "audioData", "audioData": {"data": B64, "isSilent": False}, "stopAudio": {}},
    ],
)
def test_app_audio_in_every_sdk_casing(frame: dict[str, Any]) -> None:
    assert wire.parse_out_streaming_data(json.dumps(frame)) == OutAudioData(PCM)


@pytest.mark.parametrize(
    "frame",
    [
        {"kind": "StopAudio", "audioData": None, "stopAudio": {}},
        {"Kind": "StopAudio", "AudioData": None, "StopAudio": {}},
        {"kind": "stopAudio", "stopAudio": {}},
        {"kind": "StopAudio", "stopAudio": None},
    ],
)
def test_app_stop_audio_in_every_sdk_casing(frame: dict[str, Any]) -> None:
    assert wire.parse_out_streaming_data(json.dumps(frame)) == OutStopAudio()


def test_app_frames_built_here_parse_back() -> None:
    assert wire.parse_out_streaming_data(wire.out_audio_data_frame(PCM)) == OutAudioData(PCM)
    assert wire.parse_out_streaming_data(wire.out_stop_audio_frame()) == OutStopAudio()
    assert wire.parse_out_streaming_data(wire.out_audio_data_frame(PCM).encode()) == OutAudioData(PCM)
    assert wire.parse_out_streaming_data(bytearray(wire.out_stop_audio_frame().encode())) == OutStopAudio()


def test_app_audio_tolerates_mime_line_breaks_and_empty_chunks() -> None:
    wrapped = base64.encodebytes(PCM).decode()
    assert "\n" in wrapped
    assert wire.parse_out_streaming_data(json.dumps({"kind": "AudioData", "audioData": {"data": wrapped}})) == (
        OutAudioData(PCM)
    )
    assert wire.parse_out_streaming_data('{"kind":"AudioData","audioData":{"data":""}}') == OutAudioData(b"")


@pytest.mark.parametrize(
    "frame",
    [
        "Connection authenticated.",  # what Microsoft's secure-WebSocket sample sends first
        "",
        "{",
        "[]",
        '"AudioData"',
        "null",
        '{"audioData":{"data":"AAA="}}',  # no kind
        '{"kind":5,"audioData":{"data":"AAA="}}',
        '{"kind":"MarkData","markData":{"id":"1"}}',
        '{"kind":"AudioMetadata","audioMetadata":{}}',
        '{"kind":"AudioData"}',
        '{"kind":"AudioData","audioData":null}',
        '{"kind":"AudioData","audioData":"AAA="}',
        '{"kind":"AudioData","audioData":{}}',
        '{"kind":"AudioData","audioData":{"data":null}}',
        '{"kind":"AudioData","audioData":{"data":[0,0]}}',
        '{"kind":"AudioData","audioData":{"data":"@@@@"}}',
        '{"kind":"AudioData","audioData":{"data":"AAA"}}',  # bad padding
        '{"kind":"AudioData","audio_data":{"data":"AAA="}}',  # snake_case: no SDK writes it
        '{"kind":"AudioData","audioData":{"data":"AAA="},"x":NaN}',
        '{"kind":"AudioData","audioData":{"data":"AAA="},"x":Infinity}',
        "[" * 100_000,
    ],
)
def test_malformed_app_frames_raise_wire_error(frame: str) -> None:
    with pytest.raises(WireError):
        wire.parse_out_streaming_data(frame)


def test_non_utf8_and_non_text_frames_raise_wire_error() -> None:
    with pytest.raises(WireError, match="UTF-8"):
        wire.parse_out_streaming_data(b'{"kind":"StopAudio"}\xff')
    with pytest.raises(WireError):
        wire.parse_out_streaming_data(42)  # type: ignore[arg-type]


def test_oversized_app_frames_raise_wire_error() -> None:
    frame = wire.out_audio_data_frame(bytes(3000))
    assert wire.parse_out_streaming_data(frame, max_bytes=len(frame)) == OutAudioData(bytes(3000))
    for candidate in (frame, frame.encode()):
        with pytest.raises(WireError, match="exceeds"):
            wire.parse_out_streaming_data(candidate, max_bytes=len(frame) - 1)
    # Multi-byte characters count as their UTF-8 bytes.
    accented = '{"kind":"StopAudio","note":"' + "é" * 10 + '"}'
    with pytest.raises(WireError, match="exceeds"):
        wire.parse_out_streaming_data(accented, max_bytes=len(accented))
    with pytest.raises(WireError, match="exceeds"):
        wire.parse_out_streaming_data(" " * (wire.DEFAULT_MAX_FRAME_BYTES + 1))


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


# --- helpers --------------------------------------------------------------------------------------------


def test_audio_formats_and_frame_sizes() -> None:
    assert wire.sample_rate_for(None) == 16000
    assert wire.sample_rate_for("pcm16KMono") == 16000
    assert wire.sample_rate_for("Pcm24KMono") == 24000  # .NET's enum spelling
    with pytest.raises(ValueError):
        wire.sample_rate_for("pcm8KMono")
    assert wire.frame_bytes(16000) == 640
    assert wire.frame_bytes(24000) == 960


def test_chunk_pcm_pads_the_last_frame_with_silence() -> None:
    chunks = list(wire.chunk_pcm(bytes([1]) * 1000, 640))
    assert [len(c) for c in chunks] == [640, 640]
    assert chunks[1][360:] == bytes(280)
    assert [len(c) for c in wire.chunk_pcm(bytes(1000), 640, pad=False)] == [640, 360]
    with pytest.raises(ValueError):
        list(wire.chunk_pcm(b"", 0))


def test_silence_detection() -> None:
    assert wire.pcm_is_silent(bytes(640))
    loud = (1000).to_bytes(2, "little", signed=True) * 320
    assert not wire.pcm_is_silent(loud)
    quiet = (-3).to_bytes(2, "little", signed=True) * 320
    assert wire.pcm_is_silent(quiet, threshold=3)
    assert not wire.pcm_is_silent(quiet)


def test_ticks() -> None:
    assert wire.seconds_to_ticks(1) == 10_000_000
    assert wire.seconds_to_ticks(0.5) == 5_000_000
