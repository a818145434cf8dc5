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


def _late_offer_caller(answer_port: str | None) -> str:
    """A caller whose INVITE has no SDP: it answers the offer in callgrid's 200 in its ACK (at `answer_port`),
    or, with None, sends an ACK without the answer; then waits for callgrid's BYE."""
    from tests.sip.sipp import _SDP

    body = _SDP.format(payloads="8 101", media_port=answer_port) if answer_port else ""
    ctype = "      Content-Type: application/sdp\n" if body else ""
    sdp_lines = "\n".join("      " + line for line in body.splitlines())
    return scenario(
        "late-offer",
        f"""
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Pat Caller" <sip:{CALLER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{CALLER}@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>""",
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        f"""
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Pat Caller" <sip:{CALLER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
{ctype}      Content-Length: [len]

{sdp_lines}
    ]]>
  </send>""",
        '\n  <recv request="BYE" timeout="60000"/>',
        uas_reply("200 OK"),
    )


def test_an_invite_without_sdp_gets_the_offer_in_the_200_and_media_follows_the_acks_answer(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> None:
    sip.own_number(NUMBER)
    uac = Sipp(
        tmp_path,
        "caller",
        _late_offer_caller("[rtp_peer]"),
        remote=f"127.0.0.1:{sip.sip_port}",  # type: ignore[attr-defined]
        service=NUMBER,
        caller=CALLER,
        extra=["-key", "rtp_peer", str(peer.port)],
    ).start()
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        assert ccid is not None
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        peer.wait_for_media()  # callgrid's RTP goes where the ACK's answer said
        with peer._lock:
            assert {p.payload_type for p in peer.received} == {8}  # the answer chose A-law
        automation.get_call_connection(ccid).start_recognizing_media(
            RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLER), dtmf_max_tones_to_collect=2
        )
        peer.press("42")
        assert _callback(app, ccid, "RecognizeCompleted")["dtmfResult"]["tones"] == ["four", "two"]
        _hang_up(automation, ccid, uac)
        ok = uac.trace().split("SIP/2.0 200 OK", 1)[1]
        assert "m=audio" in ok and "RTP/AVP 0 8 101" in ok  # the 200 made the offer
    finally:
        uac.stop()


def test_an_ack_without_the_answer_ends_the_call(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, tmp_path: Path
) -> None:
    sip.own_number(NUMBER)
    uac = Sipp(
        tmp_path,
        "caller",
        _late_offer_caller(None),
        remote=f"127.0.0.1:{sip.sip_port}",  # type: ignore[attr-defined]
        service=NUMBER,
        caller=CALLER,
    ).start()
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        assert ccid is not None
        run = uac.wait()  # callgrid's BYE came, and was answered
        assert run.returncode == 0, run.out + run.trace
        _callback(app, ccid, "CallDisconnected")
    finally:
        uac.stop()


def test_rtp_from_another_address_is_dropped_and_counted(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> None:
    import socket
    import struct

    from callgrid.sip import rtp
    from tests.sip.conftest import sip_metric

    uac, ccid = _connected_call(sip, app, automation, peer, tmp_path)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))  # another host than the caller's SDP named
    try:
        before = sip_metric(sip, "rtp_from_wrong_address")
        automation.get_call_connection(ccid).start_recognizing_media(
            RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLER), dtmf_max_tones_to_collect=1
        )
        callgrid_rtp = peer.wait_for_media()
        for i in range(5):  # the key 9, ended, as a caller would send it
            payload = struct.pack("!BBH", 9, 0x80 | 10, 800)
            stranger.sendto(rtp.build_packet(101, 500 + i, 4242, 0xBADBAD, payload, i == 0), callgrid_rtp)
        wait(lambda: sip_metric(sip, "rtp_from_wrong_address") >= before + 5, what="the stranger's packets counted")
        peer.press("1")
        # Only the caller's key was collected: the stranger's 9 was not heard.
        assert _callback(app, ccid, "RecognizeCompleted")["dtmfResult"]["tones"] == ["one"]
        _hang_up(automation, ccid, uac)
    finally:
        stranger.close()
        uac.stop()


def test_a_reinvite_without_sdp_gets_an_offer_and_the_acks_answer_moves_the_media(
    sip: CallgridServer, app: WebhookReceiver, automation: CallAutomationClient, peer: RtpPeer, tmp_path: Path
) -> None:
    from tests.sip.sipp import _SDP, in_dialog

    sip.own_number(NUMBER)
    answer = "\n".join("      " + line for line in _SDP.format(payloads="0 101", media_port="[rtp_peer]").splitlines())
    check = '<ereg regexp="RTP/AVP 0 8 101" search_in="body" check_it="true" assign_to="o"/>'
    reack = ack().replace("CSeq: 1 ACK", "CSeq: 2 ACK")
    reack = reack.replace(
        "      Content-Length: 0\n", f"      Content-Type: application/sdp\n      Content-Length: [len]\n\n{answer}\n"
    )
    xml = scenario(
        "reinvite-no-sdp",
        invite(caller=CALLER),  # the first offer points at SIPp's own media port: nobody reads there
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        in_dialog("INVITE", 2),
        f'\n  <recv response="200"><action>{check}</action></recv>',
        reack.replace("Max-Forwards: 70", "Max-Forwards: 70\n      X-Seen: [$o]"),
        '\n  <recv request="BYE" timeout="60000"/>',
        uas_reply("200 OK"),
    )
    uac = Sipp(
        tmp_path,
        "caller",
        xml,
        remote=f"127.0.0.1:{sip.sip_port}",  # type: ignore[attr-defined]
        service=NUMBER,
        caller=CALLER,
        extra=["-key", "rtp_peer", str(peer.port)],
    ).start()
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        assert ccid is not None
        peer.wait_for_media()  # only the re-INVITE's ACK named this address
        _hang_up(automation, ccid, uac)
    finally:
        uac.stop()
