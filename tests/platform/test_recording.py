"""Recording through the SDK: state changes, a WAV file of the recorded time announced on Event Grid and
downloadable from callgrid, metadata, and the errors for what cannot be recorded."""

from __future__ import annotations

import io
import json
import time
import wave
from datetime import UTC, datetime
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


def download(server: CallgridServer, url: str) -> requests.Response:
    """What an app does with contentLocation: a GET signed with the access key."""
    parts = urlsplit(url)
    headers = sign_request("GET", parts.path, parts.netloc, b"", server.access_key, datetime.now(UTC))
    return requests.get(url, headers=headers, verify=server.ca_bundle)


def recording_events(world: World) -> list[dict[str, Any]]:
    return [e for e in world.webhook.callbacks() if e["type"].endswith("RecordingStateChanged")]


def test_a_recording_holds_the_recorded_time_with_its_tones(world: World) -> None:
    server_call_id, _ = answered(world)
    automation = world.automation
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
    assert event.subject == f"/recording/call/{server_call_id}/recordingId/{started.recording_id}"
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

    metadata = download(world.server, chunk["metadataLocation"]).json()
    assert metadata["callId"] == server_call_id
    assert metadata["chunkDuration"] == 5000
    assert metadata["pauseResumeIntervals"][0]["duration"] == 10000
    assert metadata["recordingInfo"]["format"] == "wav"
    json.dumps(metadata)
    assert download(world.server, chunk["contentLocation"].replace(started.recording_id, "nope")).status_code == 404
    parts = urlsplit(chunk["deleteLocation"])
    headers = sign_request("DELETE", parts.path, parts.netloc, b"", world.server.access_key, datetime.now(UTC))
    assert requests.delete(chunk["deleteLocation"], headers=headers, verify=world.server.ca_bundle).status_code == 204
    assert download(world.server, chunk["contentLocation"]).status_code == 404


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
