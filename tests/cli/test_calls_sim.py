"""`callgrid hang-up`, `callgrid send-dtmf` and `callgrid recordings download`, run as a user runs them."""

from __future__ import annotations

import time
import wave
from pathlib import Path

from azure.communication.callautomation import CallAutomationClient
from azure.communication.identity import CommunicationIdentityClient

from callgrid.testing import CallgridServer
from tests.cli.test_cli import _run

CALLER = "+12065550100"


def connected_call(server: CallgridServer) -> str:
    """A public caller reaches an identity whose simulated device answers at once: the serverCallId."""
    user = CommunicationIdentityClient.from_connection_string(server.connection_string).create_user().properties["id"]
    client = server.client()
    client.set_endpoint(user, "answer")
    placed = client.place_call(CALLER, user)
    server.advance(0)
    call = client.get_call(placed["serverCallId"])
    assert call["state"] == "connected"
    return str(placed["serverCallId"])


def test_send_dtmf_hang_up_and_download_a_recording(fresh: CallgridServer, tmp_path: Path) -> None:
    server_call_id = connected_call(fresh)
    automation = CallAutomationClient.from_connection_string(fresh.connection_string, retry_total=0)
    started = time.monotonic()
    recording = automation.start_recording(server_call_id=server_call_id)
    pressed = _run(fresh, "send-dtmf", server_call_id, "4:" + CALLER, "12#")
    assert pressed.returncode == 0, pressed.stderr
    assert "pressed one two pound" in pressed.stdout
    timeline = fresh.client().get_call(server_call_id)["timeline"]
    assert any(t["event"] == "dtmfReceived" and t["tones"] == ["one", "two", "pound"] for t in timeline)
    fresh.advance(2)
    hung_up = _run(fresh, "hang-up", server_call_id, "--participant", "4:" + CALLER)
    assert hung_up.returncode == 0, hung_up.stderr
    assert "disconnected" in hung_up.stdout  # a 1:1 call ends when one side hangs up
    real = time.monotonic() - started

    out, meta = tmp_path / "call.wav", tmp_path / "call.json"
    downloaded = _run(
        fresh, "recordings", "download", str(recording.recording_id), "-o", str(out), "--metadata", str(meta)
    )
    assert downloaded.returncode == 0, downloaded.stderr
    # The 2 s of the call's clock the recording ran, plus the real time its audio took (slow CLI starts on a
    # loaded machine make that longer; it is bounded by what this test measured).
    with wave.open(str(out)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert 2.0 <= seconds <= 2.0 + real + 0.5, (seconds, real)
    assert f"{seconds:.3f} s of audio" in downloaded.stdout
    assert '"chunkDuration":2000' in meta.read_text().replace(" ", "")


def test_errors_say_what_is_wrong(fresh: CallgridServer, tmp_path: Path) -> None:
    unknown = _run(fresh, "hang-up", "bm8tc3VjaC1jYWxs")
    assert unknown.returncode == 1
    assert "8522" in unknown.stderr and "No call" in unknown.stderr
    server_call_id = connected_call(fresh)
    bad_key = _run(fresh, "send-dtmf", server_call_id, "4:" + CALLER, "1x")
    assert bad_key.returncode == 1
    assert "'x' is not a DTMF key" in bad_key.stderr
    stranger = _run(fresh, "send-dtmf", server_call_id, "4:+19995550100", "1")
    assert stranger.returncode == 1 and "not in the call" in stranger.stderr
    missing = _run(fresh, "recordings", "download", "no-such-recording", "-o", str(tmp_path / "x.wav"))
    assert missing.returncode == 1 and "was not found" in missing.stderr
    assert not (tmp_path / "x.wav").exists()
