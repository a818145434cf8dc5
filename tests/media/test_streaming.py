"""Media streaming and live transcription through the official SDK, over real WebSockets, with real audio."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import (
    AudioFormat,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    StreamingTransportType,
    TranscriptionOptions,
)
from azure.communication.identity import identifier_from_raw_id
from azure.core.exceptions import HttpResponseError

from callgrid.security.tls import ensure_tls_material
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import CALLER, RATE, answer, callback, chirp, find, heard, play, say, wait, words_of
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world
from tests.support.media_app import MediaApp

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


@pytest.fixture
def echo_app() -> Iterator[MediaApp]:
    app = MediaApp(echo=True)
    yield app
    app.close()


def streaming(url: str, *, start: bool = True, bidirectional: bool = True, **extra: object) -> MediaStreamingOptions:
    return MediaStreamingOptions(
        transport_url=url,
        transport_type=StreamingTransportType.WEBSOCKET,
        content_type=MediaStreamingContentType.AUDIO,
        audio_channel_type=MediaStreamingAudioChannelType.MIXED,
        start_media_streaming=start,
        enable_bidirectional=bidirectional,
        **extra,  # type: ignore[arg-type]
    )


def transcription(url: str, **extra: bool) -> TranscriptionOptions:
    return TranscriptionOptions(
        transport_url=url,
        transport_type=StreamingTransportType.WEBSOCKET,
        locale="en-US",
        start_transcription=True,
        **extra,
    )


def test_an_echo_bot_returns_the_callers_voice_in_order(world: World, echo_app: MediaApp) -> None:
    server_call_id, ccid = answer(world, media_streaming=streaming(echo_app.url))
    started = callback(world, ccid, "MediaStreamingStarted")
    assert started["mediaStreamingUpdate"] == {
        "contentType": "Audio",
        "mediaStreamingStatus": "mediaStreamingStarted",
        "mediaStreamingStatusDetails": "subscriptionStarted",
    }
    props = world.automation.get_call_connection(ccid).get_call_properties()
    assert props.media_streaming_subscription is not None
    assert props.media_streaming_subscription.state == "active"

    signal = chirp(1.0)
    play(world, server_call_id, signal)
    # The app received the caller's audio, sample for sample, after the metadata frame.
    echo_app.wait_for(lambda: find(signal, echo_app.audio())[1] > 0.99, timeout=10)
    assert echo_app.frames[0]["kind"] == "AudioMetadata"
    metadata = echo_app.frames[0]["audioMetadata"]
    assert (metadata["sampleRate"], metadata["channels"], metadata["encoding"], metadata["length"]) == (
        16000,
        1,
        "PCM",
        640,
    )
    data = echo_app.of_kind("AudioData")
    stamps = [datetime.fromisoformat(f["audioData"]["timestamp"].replace("Z", "+00:00")) for f in data]
    assert stamps == sorted(stamps)
    assert all(len(f["audioData"]["data"]) == 856 for f in data)  # 640 bytes of PCM in base64

    # The caller hears their own voice back from the bot, whole and in order, a few frames later.
    at, likeness = wait(lambda: (r := find(signal, heard(world, server_call_id)))[1] > 0.95 and r, what="the echo")
    assert likeness > 0.95
    heard_audio = heard(world, server_call_id)
    # Only once: the caller never hears themself except through the bot.
    rest = np.concatenate([heard_audio[:at], heard_audio[at + len(signal) :]])
    assert find(signal, rest)[1] < 0.5
    # The call ends: callgrid closes the socket cleanly.
    world.automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
    assert echo_app.wait_for(lambda: echo_app.closes) == [1000]


def test_stop_and_start_media_streaming_and_the_subscription_state(world: World, echo_app: MediaApp) -> None:
    _, ccid = answer(world, media_streaming=streaming(echo_app.url, start=False))
    connection = world.automation.get_call_connection(ccid)
    props = connection.get_call_properties()
    assert props.media_streaming_subscription is not None
    assert props.media_streaming_subscription.state == "inactive"
    assert echo_app.connections == 0
    with pytest.raises(HttpResponseError):
        connection.stop_media_streaming()
    connection.start_media_streaming(operation_context="go")
    started = callback(world, ccid, "MediaStreamingStarted")
    assert started["operationContext"] == "go"
    echo_app.wait_for(lambda: echo_app.of_kind("AudioMetadata"))
    connection.stop_media_streaming(operation_context="enough")
    stopped = callback(world, ccid, "MediaStreamingStopped")
    assert stopped["mediaStreamingUpdate"]["mediaStreamingStatus"] == "mediaStreamingStopped"  # type: ignore[index]
    assert connection.get_call_properties().media_streaming_subscription.state == "inactive"


def test_an_unreachable_websocket_fails_the_stream_not_the_call(world: World) -> None:
    _, ccid = answer(world, media_streaming=streaming("ws://127.0.0.1:9/nobody"))
    failed = callback(world, ccid, "MediaStreamingFailed")
    assert failed["resultInformation"]["subCode"] == 8603  # type: ignore[index]
    assert "operationContext" not in failed
    assert failed["mediaStreamingUpdate"]["mediaStreamingStatusDetails"] == "streamConnectionUnsuccessful"  # type: ignore[index]
    props = world.automation.get_call_connection(ccid).get_call_properties()
    assert props.call_connection_state == "connected"


def test_a_wss_app_with_a_certificate_of_its_own_gets_its_transcription(world: World, tmp_path: Path) -> None:
    # A dev tunnel's stand-in (a local TLS proxy, mkcert) signs with a CA that callgrid's process was never
    # told to trust; callgrid's webhooks already reach such apps, and so does its WebSocket dialler.
    own = ensure_tls_material(tmp_path / "app-tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(own.server_cert, own.server_key)
    app = MediaApp(tls=context)
    try:
        _, ccid = answer(world, transcription=transcription(app.url))
        started = callback(world, ccid, "TranscriptionStarted")
        assert started["transcriptionUpdate"]["transcriptionStatus"] == "transcriptionStarted"  # type: ignore[index]
        # Started by the answer, with no operation context: the key is absent, not null. Microsoft's samples
        # test `operationContext === undefined` (JavaScript) and `'operationContext' in data` (Python).
        assert "operationContext" not in started
        app.wait_for(lambda: app.of_kind("TranscriptionMetadata"))
        assert app.url.startswith("wss://")
    finally:
        app.close()


def test_streaming_needs_options_from_the_call_setup(world: World) -> None:
    _, ccid = answer(world)
    with pytest.raises(HttpResponseError) as error:
        world.automation.get_call_connection(ccid).start_media_streaming()
    assert error.value.status_code == 400


def test_bad_frames_from_the_app_are_dropped_and_counted(world: World) -> None:
    def garbage(frame: dict[str, object]) -> str | None:
        return "{not json" if frame.get("kind") == "AudioMetadata" else None

    app = MediaApp(reply=garbage)
    try:
        server_call_id, ccid = answer(world, media_streaming=streaming(app.url))
        callback(world, ccid, "MediaStreamingStarted")
        app.wait_for(lambda: len(app.of_kind("AudioData")) > 0 or None)
        say(world, server_call_id, "still here")
        app.wait_for(lambda: any(not f["audioData"]["silent"] for f in app.of_kind("AudioData")))
        metrics = world.server.client()._send("GET", "/metrics", b"", {}, json_body=False, as_bytes=True).decode()
        assert "callgrid_media_media_streaming_frames_rejected 1" in metrics
    finally:
        app.close()


def test_24khz_streams_carry_24khz_frames(world: World, echo_app: MediaApp) -> None:
    server_call_id, ccid = answer(world, media_streaming=streaming(echo_app.url, audio_format=AudioFormat.PCM24_K_MONO))
    callback(world, ccid, "MediaStreamingStarted")
    tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)).astype(np.int16)
    play(world, server_call_id, tone)
    assert echo_app.wait_for(lambda: echo_app.of_kind("AudioMetadata"))[0]["audioMetadata"]["sampleRate"] == 24000
    echo_app.wait_for(lambda: sum(not f["audioData"]["silent"] for f in echo_app.of_kind("AudioData")) >= 40)
    loud = [f for f in echo_app.of_kind("AudioData") if not f["audioData"]["silent"]]
    samples = np.frombuffer(b"".join(__import__("base64").b64decode(f["audioData"]["data"]) for f in loud[5:35]), "<i2")
    assert len(samples) == 30 * 480
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    peak_hz = float(np.argmax(spectrum)) * 24000 / len(samples)
    assert abs(peak_hz - 1000) < 20
    # The echo comes back converted to the call's rate: the caller hears the same 1 kHz tone.
    wait(lambda: find(tone[4000:8000], heard(world, server_call_id))[1] > 0.9 or None, what="the 24 kHz echo")


def test_live_transcription_of_what_the_caller_says(world: World) -> None:
    app = MediaApp()
    try:
        server_call_id, ccid = answer(world, transcription=transcription(app.url))
        started = callback(world, ccid, "TranscriptionStarted")
        assert started["transcriptionUpdate"]["transcriptionStatus"] == "transcriptionStarted"  # type: ignore[index]
        props = world.automation.get_call_connection(ccid).get_call_properties()
        assert props.transcription_subscription.state == "active"
        sentence = "please send the invoice to my office"
        say(world, server_call_id, sentence)
        data = app.wait_for(lambda: app.of_kind("TranscriptionData"), timeout=30)[0]["transcriptionData"]
        metadata = app.of_kind("TranscriptionMetadata")[0]["transcriptionMetadata"]
        assert metadata["callConnectionId"] == ccid
        assert metadata["locale"] == "en-US"
        assert data["resultStatus"] == "Final"
        assert data["participantRawID"] == CALLER
        assert identifier_from_raw_id(data["participantRawID"]).raw_id == CALLER
        assert len(words_of(data["text"]) & words_of(sentence)) >= 3, data["text"]
        # Display text, as ACS sends a Final result: a capital first letter and a closing period; the words
        # stay lexical (lower case).
        assert data["format"] == "display"
        assert data["text"][0].isupper() and data["text"].endswith("."), data["text"]
        assert all(w["text"] == w["text"].lower() for w in data["words"])
        assert 0 < data["confidence"] <= 1
        assert data["duration"] > 10_000_000  # ticks of 100 ns: over a second
        assert all({"text", "offset", "duration"} <= set(w) for w in data["words"])
        world.automation.get_call_connection(ccid).stop_transcription()
        assert callback(world, ccid, "TranscriptionStopped")
        # Every frame was JSON text as ACS sends it.
        assert all(isinstance(json.loads(raw), dict) for raw in app.raw)
    finally:
        app.close()


def test_the_fast_audio_frame_is_the_wire_models_frame() -> None:
    from callgrid.media import wire
    from callgrid.media.streaming import _mixed_frame

    pcm = (np.random.default_rng(1).normal(0, 1000, 320)).astype(np.int16)
    now = datetime.now(UTC)
    for frame, silent in ((pcm, False), (np.zeros(320, np.int16), True)):
        fast = json.loads(_mixed_frame(wire.format_timestamp(now), frame, silent))
        model = json.loads(wire.AudioData(frame.astype("<i2").tobytes(), now, silent=silent).to_json())
        assert fast == model
        assert isinstance(wire.parse_streaming_data(json.dumps(fast)), wire.AudioData)


def test_intermediate_results_come_while_the_caller_speaks(world: World) -> None:
    app = MediaApp()
    try:
        server_call_id, ccid = answer(world, transcription=transcription(app.url, enable_intermediate_results=True))
        callback(world, ccid, "TranscriptionStarted")
        props = world.automation.get_call_connection(ccid).get_call_properties()
        assert props.transcription_subscription.subscribed_result_types == ["final", "intermediate"]
        say(world, server_call_id, "I would like to check the balance of my savings account and then pay a bill")
        app.wait_for(lambda: any(f["transcriptionData"]["resultStatus"] == "Final" for f in data(app)), timeout=40)
        statuses = [f["transcriptionData"]["resultStatus"] for f in data(app)]
        # What was said so far, every second of speech, then the whole utterance once it ended.
        assert statuses[0] == "Intermediate" and statuses[-1] == "Final" and statuses.count("Final") == 1
    finally:
        app.close()


def data(app: MediaApp) -> list[dict[str, Any]]:
    return app.of_kind("TranscriptionData")


def test_a_stalled_consumer_loses_only_its_own_frames(world: World, echo_app: MediaApp) -> None:
    """An app that stops reading its socket: callgrid keeps 10 s of its frames, then drops the oldest and
    counts them; another call's stream goes on at real-time pace, and the stalled call stays connected."""
    stalled = MediaApp(stall=True)
    try:
        _, stuck = answer(world, media_streaming=streaming(stalled.url, bidirectional=False))
        callback(world, stuck, "MediaStreamingStarted")
        placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
        context = world.incoming(1).data["incomingCallContext"]
        healthy = world.automation.answer_call(
            context, world.callback_url, media_streaming=streaming(echo_app.url)
        ).call_connection_id
        assert healthy is not None and placed["serverCallId"]

        started = time.monotonic()
        dropped = wait_for_metric(world, "callgrid_media_media_streaming_frames_dropped", timeout=90)
        assert dropped > 0
        # The healthy stream kept pace all along: about 50 frames a second since it began.
        seconds = time.monotonic() - started
        frames = len(echo_app.of_kind("AudioData"))
        assert frames >= 0.8 * 50 * seconds, (frames, seconds)
        stuck_call = world.automation.get_call_connection(stuck).get_call_properties()
        assert stuck_call.call_connection_state == "connected"
    finally:
        stalled.close()


def wait_for_metric(world: World, name: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = world.server.client()._send("GET", "/metrics", b"", {}, json_body=False, as_bytes=True).decode()
        for line in text.splitlines():
            if line.startswith(name + " ") and float(line.split()[1]) > 0:
                return float(line.split()[1])
        time.sleep(0.25)
    raise AssertionError(f"{name} stayed 0 for {timeout} s")


def test_a_server_that_stops_closes_its_streams_cleanly(
    tmp_path: Path, callgrid_tls_dir: Path, webhook: WebhookReceiver, echo_app: MediaApp
) -> None:
    # A server of its own: this one is stopped (SIGTERM) while a call streams to the app.
    server = CallgridServer(tmp_path / "callgrid", tls_dir=callgrid_tls_dir).start()
    try:
        world = make_world(server, webhook)
        server_call_id, ccid = answer(world, media_streaming=streaming(echo_app.url))
        callback(world, ccid, "MediaStreamingStarted")
        play(world, server_call_id, chirp(0.5))
        echo_app.wait_for(lambda: len(echo_app.of_kind("AudioData")) > 10)
        server.stop()
        # The media plane closed the socket with a close frame before the process ended.
        assert echo_app.wait_for(lambda: echo_app.closes) == [1000]
    finally:
        server.stop()
