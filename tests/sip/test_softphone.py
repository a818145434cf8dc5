"""A real softphone (Debian's baresip) with a WAV file as its microphone calls an app that recognises
speech and answers with a prompt: the app's recognition is right, and the softphone's own recording of
what it heard contains the prompt."""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    FileSource,
    PhoneNumberIdentifier,
    RecognizeInputType,
)

from callgrid.media import codecs, speech
from callgrid.testing import CallgridServer, WebhookReceiver
from callgrid.testing.server import free_port
from tests.media.voice_support import FileServer, chirp, find, words_of

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

NUMBER = "+14255551212"
CALLER = "+12065550100"
BARESIP = shutil.which("baresip")


def _baresip(home: Path, microphone: Path, dial: str, seconds: int) -> subprocess.Popen[bytes]:
    conf = home / "conf"
    conf.mkdir(parents=True)
    (home / "rec").mkdir()
    (conf / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                "net_interface 127.0.0.1",  # its SDP names loopback, where callgrid takes RTP from
                f"sip_listen 127.0.0.1:{free_port()}",
                "audio_player aubridge,nowhere",  # no sound card: the sndfile filter keeps what is heard
                f"audio_source aufile,{microphone}",
                "audio_alert aubridge,nowhere",
                "audio_srate 8000",
                "audio_channels 1",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module aubridge.so",
                "module sndfile.so",
                "module menu.so",
                "module_app account.so",
                f"snd_path {home / 'rec'}",
                "",
            ]
        )
    )
    (conf / "accounts").write_text(f"<sip:{CALLER}@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    (conf / "contacts").write_text("")
    return subprocess.Popen(
        [BARESIP, "-f", str(conf), "-t", str(seconds), "-e", f"/dial {dial}"],
        stdout=(home / "baresip.log").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _heard_by_softphone(rec: Path) -> np.ndarray:
    # sndfile writes what was sent (-enc) and what was received (-dec) per call.
    for path in rec.glob("*dec*.wav"):
        with wave.open(str(path)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
            return codecs.resample(pcm, w.getframerate(), 16000)
    return np.zeros(0, dtype=np.int16)


def test_a_softphone_speaking_from_a_wav_is_recognised_and_hears_the_prompt(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, tmp_path: Path
) -> None:
    assert BARESIP is not None, "baresip (Debian's baresip) is required"
    sip.own_number(NUMBER)
    sentence = "I would like to pay my phone bill"
    voice = speech.synthesize_blocking(sentence)
    # Two seconds of silence first: the app starts listening once it has answered.
    # Silence after it too: baresip hangs up when its file ends, and the app hangs up first.
    spoken = np.concatenate([np.zeros(32000, dtype=np.int16), voice, np.zeros(16000 * 15, dtype=np.int16)])
    microphone = tmp_path / "microphone.wav"
    microphone.write_bytes(codecs.encode_wav([codecs.resample(spoken, 16000, 8000)], 8000))
    signal = chirp(1.0, 300.0, 3000.0)
    files = FileServer({"/chirp.wav": codecs.encode_wav([signal], 16000)})
    phone = _baresip(tmp_path / "baresip", microphone, f"sip:{NUMBER}@127.0.0.1:{sip.sip_port}", 25)  # type: ignore[attr-defined]
    try:
        try:
            incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        except AssertionError as exc:
            # Whether baresip dialled at all (it once did not, in CI): its own account of its start.
            log = (tmp_path / "baresip" / "baresip.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\nbaresip exited with {phone.poll()}; its log:\n{log}") from None
        assert incoming["from"]["phoneNumber"]["value"] == CALLER
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        assert ccid is not None
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        connection = automation.get_call_connection(ccid)
        connection.start_recognizing_media(RecognizeInputType.SPEECH, PhoneNumberIdentifier(CALLER))
        completed = app.wait_for(
            "Microsoft.Communication.RecognizeCompleted", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        heard_words = words_of(completed["data"]["speechResult"]["speech"])
        assert len(heard_words & words_of(sentence)) >= 4, heard_words
        connection.play_media_to_all(FileSource(files.url("/chirp.wav")))
        # The prompt plays out in real time; the softphone keeps what it heard.
        time.sleep(2.5)
        connection.hang_up(is_for_everyone=True)
        phone.wait(timeout=40)
        heard = _heard_by_softphone(tmp_path / "baresip" / "rec")
        _, likeness = find(signal, heard)
        assert likeness > 0.7, f"the softphone's recording holds the prompt only {likeness:.2f} alike"
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait()
        files.close()
