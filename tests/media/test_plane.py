"""The media plane through the official SDK: who hears what (hold music), and recordings of the call's real
audio (unmixed channels of an echo call, a mixed MP3)."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator

import av
import numpy as np
import pytest
from azure.communication.callautomation import (
    DtmfTone,
    FileSource,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
    ServerCallLocator,
    StreamingTransportType,
)

from callgrid.media import codecs
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import RATE, FileServer, answer, callback, chirp, find, heard, play, wait
from tests.platform.calling_support import PSTN_CALLER, World, make_world
from tests.support.media_app import MediaApp

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

TONE = (8000 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.int16)


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer({"/tone.wav": codecs.encode_wav([TONE])})
    yield server
    server.close()


def test_hold_music_is_heard_by_the_held_party_alone(world: World, files: FileServer) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    connection.hold(PhoneNumberIdentifier(PSTN_CALLER), play_source=FileSource(files.url("/tone.wav")))
    wait(lambda: find(TONE[:4000], heard(world, server_call_id))[1] > 0.9 or None, what="hold music")
    connection.unhold(PhoneNumberIdentifier(PSTN_CALLER))


def test_keys_the_app_sends_are_heard_by_their_target(world: World) -> None:
    # An IVR on the far end must hear send_dtmf_tones in-band, as a PSTN callee does on ACS.
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    keys = [DtmfTone.ONE, DtmfTone.TWO, DtmfTone.POUND]
    connection.send_dtmf_tones(keys, PhoneNumberIdentifier(PSTN_CALLER), operation_context="to-ivr")
    world.server.advance(0.2 * len(keys))
    assert callback(world, ccid, "SendDtmfTonesCompleted")["operationContext"] == "to-ivr"

    def pressed() -> list[str] | None:
        found = [key for _, key in codecs.detect_dtmf(heard(world, server_call_id))]
        return found if len(found) >= len(keys) else None

    assert wait(pressed, what="the keys at the caller's ear") == ["1", "2", "#"]


def test_a_recording_holds_both_parties_of_an_echo_call(world: World) -> None:
    app = MediaApp(echo=True)
    try:
        options = MediaStreamingOptions(
            transport_url=app.url,
            transport_type=StreamingTransportType.WEBSOCKET,
            content_type=MediaStreamingContentType.AUDIO,
            audio_channel_type=MediaStreamingAudioChannelType.MIXED,
            start_media_streaming=True,
            enable_bidirectional=True,
        )
        server_call_id, ccid = answer(world, media_streaming=options)
        callback(world, ccid, "MediaStreamingStarted")
        recording = world.automation.start_recording(
            ServerCallLocator(server_call_id), recording_channel_type="unmixed", recording_format_type="wav"
        )
        signal = chirp(1.0)
        play(world, server_call_id, signal)
        wait(lambda: find(signal, heard(world, server_call_id))[1] > 0.95 or None, what="the echo")
        world.automation.stop_recording(recording.recording_id)
        done = world.webhook.wait_until(
            lambda: world.system_events("Microsoft.Communication.RecordingFileStatusUpdated")
        )
        chunk = done[0].data["recordingStorageInfo"]["recordingChunks"][0]
        data = world.client.download("/" + chunk["contentLocation"].split("://", 1)[1].split("/", 1)[1])
        with wave.open(io.BytesIO(data)) as w:
            assert w.getnchannels() == 2  # the caller, then the number the app answered for (its echo)
            frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        caller, bot = frames[:, 0], frames[:, 1]
        caller_at, caller_likeness = find(signal, caller)
        bot_at, bot_likeness = find(signal, bot)
        assert caller_likeness > 0.95 and bot_likeness > 0.95
        assert bot_at > caller_at  # the echo follows the voice
    finally:
        app.close()


def test_an_audio_video_recording_is_an_mp4_with_the_calls_audio(world: World) -> None:
    server_call_id, _ = answer(world)
    recording = world.automation.start_recording(
        ServerCallLocator(server_call_id), recording_content_type="audioVideo", recording_format_type="mp4"
    )
    play(world, server_call_id, TONE)
    time.sleep(1.3)
    world.automation.stop_recording(recording.recording_id)
    done = world.webhook.wait_until(lambda: world.system_events("Microsoft.Communication.RecordingFileStatusUpdated"))
    location = done[0].data["recordingStorageInfo"]["recordingChunks"][0]["contentLocation"]
    data = world.client.download("/" + location.split("://", 1)[1].split("/", 1)[1])
    with av.open(io.BytesIO(data)) as container:
        kinds = sorted(s.type for s in container.streams)
    assert kinds == ["audio", "video"]
    pcm = codecs.decode(data)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert abs(float(np.argmax(spectrum)) * RATE / len(pcm) - 440) < 10


def test_a_mixed_mp3_recording_decodes_to_the_calls_audio(world: World) -> None:
    server_call_id, _ = answer(world)
    recording = world.automation.start_recording(ServerCallLocator(server_call_id), recording_format_type="mp3")
    play(world, server_call_id, TONE)
    time.sleep(1.3)  # audio is real time: the one-second tone plays out
    world.automation.stop_recording(recording.recording_id)
    done = world.webhook.wait_until(lambda: world.system_events("Microsoft.Communication.RecordingFileStatusUpdated"))
    location = done[0].data["recordingStorageInfo"]["recordingChunks"][0]["contentLocation"]
    data = world.client.download("/" + location.split("://", 1)[1].split("/", 1)[1])
    pcm = codecs.decode(data)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert abs(float(np.argmax(spectrum)) * RATE / len(pcm) - 440) < 10
