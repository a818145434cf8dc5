"""Recording through the SDK: state changes, a WAV file of the recorded time announced on Event Grid and
downloadable from callgrid, metadata, and the errors for what cannot be recorded."""

from __future__ import annotations

import io
import json
import socket
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from callgrid.media import codecs
from callgrid.security import sign_request
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world, phone

FILE_STATUS = "Microsoft.Communication.RecordingFileStatusUpdated"


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


def download(server: CallgridServer, url: str, extra: dict[str, str] | None = None) -> requests.Response:
    """What an app does with contentLocation: a GET signed with the access key."""
    parts = urlsplit(url)
    headers = sign_request("GET", parts.path, parts.netloc, b"", server.access_key, datetime.now(UTC))
    return requests.get(url, headers={**headers, **(extra or {})}, verify=server.ca_bundle)


def recording_events(world: World) -> list[dict[str, Any]]:
    return [e for e in world.webhook.callbacks() if e["type"].endswith("RecordingStateChanged")]


def test_a_recording_holds_the_recorded_time_with_its_tones(world: World) -> None:
    server_call_id, ccid = answered(world)
    automation = world.automation
    correlation_id = automation.get_call_connection(ccid).get_call_properties().correlation_id
    started = automation.start_recording(
        server_call_id=server_call_id, recording_state_callback_url=world.webhook.url + "/recording"
    )
    assert started.recording_state == "active"
    assert automation.get_recording_properties(started.recording_id).recording_state == "active"
    first = world.webhook.wait_until(lambda: recording_events(world))[0]
    assert first["source"] == f"calling/recordings/{server_call_id}/recordingId/{started.recording_id}"
    assert first["data"]["state"] == "active"
    assert first["data"]["recordingId"] == started.recording_id

    world.server.advance(2)
    raw = phone(PSTN_CALLER).replace("+", "%2B")
    world.client.request("POST", f"/callgrid/v1/calls/{server_call_id}/participants/{raw}:sendDtmf", {"tones": "5"})
    time.sleep(0.5)  # the key's tone plays in real time, whatever the call's clock does
    world.server.advance(1)
    automation.pause_recording(started.recording_id)
    world.server.advance(10)  # not recorded
    automation.resume_recording(started.recording_id)
    world.server.advance(2)
    with pytest.raises(HttpResponseError) as duplicate:
        automation.start_recording(server_call_id=server_call_id)
    assert duplicate.value.error is not None and duplicate.value.error.code == "8559"
    automation.stop_recording(started.recording_id)

    states = [
        e["data"]["state"]
        for e in world.webhook.wait_until(lambda: len(recording_events(world)) >= 4 and recording_events(world))
    ]
    assert states == ["active", "inactive", "active", "inactive"]
    with pytest.raises(ResourceNotFoundError):
        automation.get_recording_properties(started.recording_id)

    event = world.webhook.wait_until(lambda: world.system_events(FILE_STATUS))[0]
    # The subject Microsoft documents for the event: the call, its serverCallId, the recording.
    assert event.subject == (
        f"/recording/call/{correlation_id}/serverCallId/{server_call_id}/recordingId/{started.recording_id}"
    )
    assert event.data["recordingDurationMs"] == 5000
    assert event.data["sessionEndReason"] == "StopRecording"
    chunk = event.data["recordingStorageInfo"]["recordingChunks"][0]

    content = download(world.server, chunk["contentLocation"])
    assert content.status_code == 200
    assert content.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(content.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        # The recorded 5 s of the call's clock, plus the real time the audio took between the jumps.
        assert 5 * 16000 <= wav.getnframes() < 12 * 16000
        frames = wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2")
    keys = codecs.detect_dtmf(samples)
    assert [k for _, k in keys] == ["5"]  # the key pressed two seconds in, heard in-band
    assert 2.0 <= keys[0][0] < 4.0
    assert not samples[: 2 * 16000].any()  # silence before it

    # Part of the file, as download_recording(offset=, length=) asks: one byte range, its end inclusive.
    size, location = len(content.content), chunk["contentLocation"]
    assert content.headers["accept-ranges"] == "bytes"
    part = download(world.server, location, {"Range": "bytes=44-143"})
    assert part.status_code == 206 and part.content == content.content[44:144]
    assert part.headers["content-range"] == f"bytes 44-143/{size}"
    assert download(world.server, location, {"Range": f"bytes={size - 10}-"}).content == content.content[-10:]
    assert download(world.server, location, {"Range": "bytes=-10"}).content == content.content[-10:]
    past = download(world.server, location, {"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"]["code"] == "InvalidRange"
    for ignored in ("bytes=0-1,5-6", "bytes=9-3", "items=0-5"):  # not one range of bytes: the whole file
        whole = download(world.server, location, {"Range": ignored})
        assert whole.status_code == 200 and whole.content == content.content, ignored

    metadata = download(world.server, chunk["metadataLocation"]).json()
    assert metadata["callId"] == server_call_id
    assert metadata["chunkDuration"] == 5000
    assert metadata["pauseResumeIntervals"][0]["duration"] == 10000
    assert metadata["recordingInfo"]["format"] == "wav"
    json.dumps(metadata)
    assert download(world.server, chunk["contentLocation"].replace(started.recording_id, "nope")).status_code == 404
    parts = urlsplit(chunk["deleteLocation"])
    headers = sign_request("DELETE", parts.path, parts.netloc, b"", world.server.access_key, datetime.now(UTC))
    assert requests.delete(chunk["deleteLocation"], headers=headers, verify=world.server.ca_bundle).status_code == 200
    assert download(world.server, chunk["contentLocation"]).status_code == 404


RECORDING_HOST = "callgrid-test.asm.skype.com"


@pytest.fixture(scope="module")
def recording_host_server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    env = {"CALLGRID_RECORDING_HOST": RECORDING_HOST}
    server = CallgridServer(tmp_path_factory.mktemp("recording-host"), tls_dir=callgrid_tls_dir, env=env).start()
    yield server
    server.stop()


@pytest.fixture
def resolves_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosts-file line a user adds for the recording host, for this test process alone."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == RECORDING_HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_sdk_downloads_and_deletes_from_a_recording_host_under_asm_skype_com(
    recording_host_server: CallgridServer, webhook: WebhookReceiver, resolves_to_loopback: None
) -> None:
    # SDK 1.6 sends the key for a download or delete to *.asm.skype.com alone, signed for the endpoint's host.
    world = make_world(recording_host_server, webhook)
    server_call_id, _ = answered(world)
    started = world.automation.start_recording(server_call_id=server_call_id)
    world.server.advance(2)
    world.automation.stop_recording(started.recording_id)
    event = world.webhook.wait_until(lambda: world.system_events(FILE_STATUS))[0]
    chunk = event.data["recordingStorageInfo"]["recordingChunks"][0]
    port = urlsplit(recording_host_server.endpoint).port
    assert chunk["contentLocation"].startswith(f"https://{RECORDING_HOST}:{port}/")

    # The SDK hands back the HTTP response itself (its own issue 42835), read as Microsoft's sample does.
    content = world.automation.download_recording(chunk["contentLocation"]).read()
    with wave.open(io.BytesIO(content)) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() >= 2 * 16000
    metadata = json.loads(world.automation.download_recording(chunk["metadataLocation"]).read())
    assert metadata["callId"] == server_call_id
    part = world.automation.download_recording(chunk["contentLocation"], offset=44, length=100).read()
    assert part == content[44:144]
    world.automation.delete_recording(chunk["deleteLocation"])
    with pytest.raises(ResourceNotFoundError):
        world.automation.download_recording(chunk["contentLocation"])


def test_a_recording_stops_when_the_call_ends(world: World) -> None:
    server_call_id, ccid = answered(world)
    started = world.automation.start_recording(server_call_id=server_call_id)
    world.server.advance(3)
    world.automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
    event = world.webhook.wait_until(lambda: world.system_events(FILE_STATUS))[0]
    assert event.data["sessionEndReason"] == "CallEnded"
    assert event.data["recordingDurationMs"] == 3000
    # The file's Event Grid event and the app's state callbacks are separate deliveries: either may come first.
    changes = world.webhook.wait_until(lambda: len(recording_events(world)) >= 2 and recording_events(world))
    assert [e["data"]["state"] for e in changes] == ["active", "inactive"]
    assert started.recording_id in event.subject


def test_what_cannot_be_recorded(world: World) -> None:
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    with pytest.raises(HttpResponseError) as ringing:
        world.automation.start_recording(server_call_id=placed["serverCallId"])
    assert ringing.value.status_code == 400
    context = world.incoming(0).data["incomingCallContext"]
    world.automation.answer_call(context, world.callback_url)
    with pytest.raises(HttpResponseError) as mp3:
        # ACS records unmixed audio as WAV only.
        world.automation.start_recording(
            server_call_id=placed["serverCallId"], recording_channel_type="unmixed", recording_format_type="mp3"
        )
    assert mp3.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        world.automation.start_recording(server_call_id="bm8tc3VjaC1jYWxs")
