"""Media over the trunk: RTP both ways between a SIP caller and the media plane. The caller's keys
(RFC 4733) reach the app's recognize, its voice the app's speech recognition, and the app's prompt
reaches the caller's ear through G.711."""

from __future__ import annotations

from collections.abc import Iterator
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
from tests.media.voice_support import FileServer, chirp, find, wait, words_of
from tests.sip.rtp_peer import RtpPeer
from tests.sip.sipp import Sipp, ack, invite, recv, scenario, uas_reply

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

NUMBER = "+14255551212"
CALLER = "+12065550100"

# The caller stays on the line until the app hangs up (callgrid's BYE, answered 200).
CALLER_XML = scenario(
    "caller-with-media",
    invite(caller=CALLER, media_port="[rtp_peer]"),
    recv(100, optional=True),
    recv(180),
    recv(200, rrs=True),
    ack(),
    '\n  <recv request="BYE" timeout="60000"/>',
    uas_reply("200 OK"),
)


@pytest.fixture
def peer() -> Iterator[RtpPeer]:
    rtp_peer = RtpPeer()
    yield rtp_peer
    rtp_peer.close()


def _connected_call(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> tuple[Sipp, str]:
    sip.own_number(NUMBER)
    uac = Sipp(
        tmp_path,
        "caller",
        CALLER_XML,
        remote=f"127.0.0.1:{sip.sip_port}",  # type: ignore[attr-defined]
        service=NUMBER,
        caller=CALLER,
        extra=["-key", "rtp_peer", str(peer.port)],
    ).start()
    incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
    ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
    assert ccid is not None
    app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
    peer.wait_for_media()
    return uac, ccid


def _callback(app: WebhookReceiver, ccid: str, name: str) -> dict:
    event = app.wait_for("Microsoft.Communication." + name, lambda e: e["data"]["callConnectionId"] == ccid, timeout=30)
    return dict(event["data"])


def _hang_up(automation: CallAutomationClient, ccid: str, uac: Sipp) -> None:
    automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
    run = uac.wait()
    assert run.returncode == 0, run.out + run.trace


def test_keys_pressed_over_rtp_are_collected_by_recognize(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> None:
    uac, ccid = _connected_call(sip, app, automation, peer, tmp_path)
    try:
        automation.get_call_connection(ccid).start_recognizing_media(
            RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLER), dtmf_max_tones_to_collect=4
        )
        peer.press("17#9")
        completed = _callback(app, ccid, "RecognizeCompleted")
        assert completed["dtmfResult"]["tones"] == ["one", "seven", "pound", "nine"]
        _hang_up(automation, ccid, uac)
    finally:
        uac.stop()


def test_the_callers_voice_is_recognised_and_the_apps_prompt_reaches_the_caller(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> None:
    signal = chirp(1.0, 300.0, 3000.0)  # within G.711's band
    files = FileServer({"/chirp.wav": codecs.encode_wav([signal], 16000)})
    uac, ccid = _connected_call(sip, app, automation, peer, tmp_path)
    try:
        connection = automation.get_call_connection(ccid)
        connection.play_media_to_all(FileSource(files.url("/chirp.wav")))
        # Audio plays in real time (the virtual clock only times PlayCompleted).
        likeness = wait(lambda: (found := find(signal, peer.heard())[1]) > 0.8 and found, what="the prompt over RTP")
        assert likeness > 0.8
        sip.advance(1.5)
        _callback(app, ccid, "PlayCompleted")

        connection.start_recognizing_media(RecognizeInputType.SPEECH, PhoneNumberIdentifier(CALLER))
        sentence = "I would like to pay my phone bill"
        voice = speech.synthesize_blocking(sentence)
        peer.talk(np.concatenate([voice, np.zeros(16000, dtype=np.int16)]))
        completed = _callback(app, ccid, "RecognizeCompleted")
        heard = words_of(completed["speechResult"]["speech"])
        assert len(heard & words_of(sentence)) >= 4, heard
        _hang_up(automation, ccid, uac)
    finally:
        uac.stop()
        files.close()
