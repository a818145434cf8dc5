"""Calls into owned numbers over the SIP trunk, from SIPp as the carrier's SBC: the app sees an
IncomingCall from the PSTN caller and answers, rejects or lets it ring; the caller hears the SIP answer
that follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, CallRejectReason
from azure.communication.phonenumbers.siprouting import SipTrunk
from azure.core.exceptions import HttpResponseError

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.conftest import sip_metric
from tests.sip.sipp import Sipp, ack, header_check, in_dialog, invite, pause, recv, scenario

NUMBER = "+14255551212"
CALLER = "+12065550100"


def _remote(server: CallgridServer) -> str:
    return f"127.0.0.1:{server.sip_port}"  # type: ignore[attr-defined]


def _incoming(app: WebhookReceiver) -> dict:
    return app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]


def test_an_answered_call_carries_the_caller_and_ends_with_the_callers_bye(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    xml = scenario(
        "answered",
        invite(caller=CALLER, headers="X-MS-Custom-Ticket: 42\nX-Region: emea"),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(500),
        in_dialog("BYE", 2),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        incoming = _incoming(app)
        assert incoming["from"]["phoneNumber"]["value"] == CALLER
        assert incoming["to"]["phoneNumber"]["value"] == NUMBER
        assert incoming["callerDisplayName"] == "Pat Caller"
        assert incoming["customContext"]["sipHeaders"] == {"X-MS-Custom-Ticket": "42", "X-Region": "emea"}
        answered = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks")
        ccid = answered.call_connection_id
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        gone = app.wait_for("Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid)
        assert gone["data"]["resultInformation"]["code"] == 200
        ended = app.wait_for("Microsoft.Communication.CallEnded")
        assert ended["data"]["serverCallId"] == incoming["serverCallId"]
    finally:
        uac.stop()


def _refused_scenario(status: int) -> str:
    # The ACK of a non-2xx final shares the INVITE's branch: [branch-N] names the INVITE N messages back.
    return scenario(
        f"refused-{status}",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180, optional=True),
        recv(status),
        ack("[branch-4]"),
    )


@pytest.mark.parametrize(
    ("reason", "status"),
    [(CallRejectReason.BUSY, 486), (CallRejectReason.FORBIDDEN, 403), (CallRejectReason.NONE, 603)],
)
def test_a_rejected_call_is_refused_by_reason(
    sip: CallgridServer,
    app: WebhookReceiver,
    tmp_path: Path,
    automation: CallAutomationClient,
    reason: str,
    status: int,
) -> None:
    sip.own_number(NUMBER)
    uac = Sipp(tmp_path, "uac", _refused_scenario(status), remote=_remote(sip), service=NUMBER).start()
    try:
        automation.reject_call(_incoming(app)["incomingCallContext"], call_reject_reason=reason)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()


def test_a_call_nobody_answers_is_refused_with_480_when_its_ring_time_is_up(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(NUMBER)
    uac = Sipp(tmp_path, "uac", _refused_scenario(480), remote=_remote(sip), service=NUMBER).start()
    try:
        incoming = _incoming(app)
        sip.advance(31)  # past the 30 s ring time
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        assert sip.get_call(incoming["serverCallId"])["state"] == "disconnected"
    finally:
        uac.stop()


def _cancelled_scenario(cancel_headers: str = "") -> str:
    """The caller hangs up while it rings: CANCEL (with `cancel_headers`), 200, the INVITE's 487, ACK."""
    extra = "".join(f"\n      {line}" for line in cancel_headers.splitlines())
    cancel = f"""
  <send>
    <![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
      From: "Pat Caller" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70{extra}
      Content-Length: 0
    ]]>
  </send>"""
    return scenario(
        "cancelled",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180),
        cancel,
        recv(200),
        recv(487),
        ack("[branch-6]"),
    )


def test_a_caller_who_hangs_up_while_ringing_cancels_the_call(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    uac = Sipp(tmp_path, "uac", _cancelled_scenario(), remote=_remote(sip), service=NUMBER).start()
    try:
        incoming = _incoming(app)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        call = sip.get_call(incoming["serverCallId"])
        assert call["state"] == "disconnected"
        # The app's context is spent: answering now fails as for any abandoned call.
        with pytest.raises(HttpResponseError):
            automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks")
    finally:
        uac.stop()


def test_a_call_to_a_number_not_owned_is_not_found(sip: CallgridServer, tmp_path: Path) -> None:
    before = sip_metric(sip, "unknown_number")
    uac = Sipp(tmp_path, "uac", _refused_scenario(404), remote=_remote(sip), service="+14255550000").start()
    run = uac.wait()
    assert run.returncode == 0, run.out + run.trace
    assert sip_metric(sip, "unknown_number") == before + 1


def test_a_peer_that_is_not_allowed_is_forbidden(sip: CallgridServer, app: WebhookReceiver, tmp_path: Path) -> None:
    sip.own_number(NUMBER)
    before = sip_metric(sip, "rejected_peer")
    uac = Sipp(tmp_path, "uac", _refused_scenario(403), remote=_remote(sip), service=NUMBER, ip="127.0.0.2").start()
    run = uac.wait()
    assert run.returncode == 0, run.out + run.trace
    assert app.events("Microsoft.Communication.IncomingCall") == []
    assert sip_metric(sip, "rejected_peer") == before + 1


def test_a_configured_trunks_address_may_call_in(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, sip_routing: Any
) -> None:
    # 127.0.0.2 is not in --sip-allow; once it is a trunk's address it is a peer like the others.
    sip_routing.set_trunks([SipTrunk(fqdn="127.0.0.2", sip_signaling_port=5060)])
    sip.own_number(NUMBER)
    uac = Sipp(tmp_path, "uac", _refused_scenario(480), remote=_remote(sip), service=NUMBER, ip="127.0.0.2").start()
    try:
        incoming = _incoming(app)
        assert incoming["to"]["phoneNumber"]["value"] == NUMBER
        sip.advance(31)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()


def test_a_call_redirected_to_an_identity_is_answered_there(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    from azure.communication.callautomation import CommunicationUserIdentifier
    from azure.communication.identity import CommunicationIdentityClient
    from azure.core.pipeline.transport import RequestsTransport

    sip.own_number(NUMBER)
    transport = RequestsTransport(connection_verify=sip.ca_bundle)
    user = CommunicationIdentityClient.from_connection_string(sip.connection_string, transport=transport).create_user()
    transport.close()
    xml = scenario(
        "redirected",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(500),
        in_dialog("BYE", 2),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        first = _incoming(app)
        automation.redirect_call(first["incomingCallContext"], CommunicationUserIdentifier(user.properties["id"]))
        second = app.wait_for(
            "Microsoft.Communication.IncomingCall", lambda e: e["data"]["to"]["rawId"] == user.properties["id"]
        )["data"]
        assert second["from"]["phoneNumber"]["value"] == CALLER
        automation.answer_call(second["incomingCallContext"], app.url + "/callbacks")
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        app.wait_for("Microsoft.Communication.CallEnded")
    finally:
        uac.stop()


def test_a_reinvite_puts_the_call_on_hold_and_back(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    reinvite = in_dialog("INVITE", 2, _sipp_sdp("sendonly", version=2), "application/sdp")
    resume = in_dialog("INVITE", 4, _sipp_sdp("sendrecv", version=2), "application/sdp")
    reack = ack().replace("CSeq: 1 ACK", "CSeq: {n} ACK")
    xml = scenario(
        "hold",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        reinvite,
        _expect_200_with("a=recvonly", "h"),
        reack.replace("{n}", "2").replace("Max-Forwards: 70", "Max-Forwards: 70\n      X-Seen: [$h]"),
        resume,
        _expect_200_with("a=sendrecv", "r"),
        reack.replace("{n}", "4").replace("Max-Forwards: 70", "Max-Forwards: 70\n      X-Seen: [$r]"),
        in_dialog("BYE", 5),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        incoming = _incoming(app)
        automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks")
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()


def _sipp_sdp(direction: str, *, version: int = 1) -> str:
    """The caller's offer in a re-INVITE (SIPp fills in the bracketed fields)."""
    return (
        f"v=0\no=sipp 1 {version} IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n"
        f"m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\na={direction}"
    )


def _expect_200_with(text: str, variable: str) -> str:
    """A 200 whose SDP must hold `text` (SIPp fails the call otherwise)."""
    check = f'<ereg regexp="{text}" search_in="body" check_it="true" assign_to="{variable}"/>'
    return f'\n  <recv response="200"><action>{check}</action></recv>'


def _our_origins(trace: str) -> list[tuple[str, str, str]]:
    """(CSeq, session id, version) of each o= line of ours that SIPp received, retransmissions once."""
    seen: list[tuple[str, str, str]] = []
    for message in trace.split("message received")[1:]:
        cseq = next((line.split(":", 1)[1].strip() for line in message.splitlines() if line.startswith("CSeq:")), "")
        for line in message.splitlines():
            if line.startswith("o=callgrid "):
                _, sid, version = line.split()[:3]
                if (cseq, sid, version) not in seen:
                    seen.append((cseq, sid, version))
    return seen


def test_our_sdp_keeps_its_session_id_and_counts_its_versions_through_hold_resume_and_a_refresh(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    reack = ack().replace("CSeq: 1 ACK", "CSeq: {n} ACK")
    steps = [invite(caller=CALLER), recv(100, optional=True), recv(180), recv(200, rrs=True), ack()]
    # Hold, resume, and the same offer again (a re-INVITE refreshing the session changes nothing).
    for cseq, version, direction in ((2, 2, "sendonly"), (3, 3, "sendrecv"), (4, 3, "sendrecv")):
        body = _sipp_sdp(direction, version=version)
        steps += [in_dialog("INVITE", cseq, body, "application/sdp"), recv(200), reack.replace("{n}", str(cseq))]
    steps += [in_dialog("BYE", 5), recv(200)]
    uac = Sipp(tmp_path, "uac", scenario("versions", *steps), remote=_remote(sip), service=NUMBER, caller=CALLER)
    uac.start()
    try:
        automation.answer_call(_incoming(app)["incomingCallContext"], app.url + "/callbacks")
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()
    origins = _our_origins(run.trace)
    assert [(cseq, version) for cseq, _, version in origins] == [
        ("1 INVITE", "1"),
        ("2 INVITE", "2"),  # held: our answer says recvonly
        ("3 INVITE", "3"),  # resumed
        ("4 INVITE", "3"),  # the same answer again
    ]
    assert len({sid for _, sid, _ in origins}) == 1


def test_a_request_requiring_extensions_we_lack_is_refused_420_naming_exactly_those(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    refused = sip_metric(sip, "bad_extension")
    # timer is ours (session timers are on); 100rel (PRACK) and the others are not.
    demanding = invite(caller=CALLER, headers="Require: 100rel, timer\nRequire: Foo\nSupported: timer")
    plain = invite(caller=CALLER).replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    # A re-INVITE asking for call replacement (RFC 3891) is refused too, and the call goes on.
    replacing = in_dialog("INVITE", 3, _sipp_sdp("sendrecv"), "application/sdp").replace(
        "Max-Forwards: 70", "Max-Forwards: 70\n      Require: replaces"
    )
    xml = scenario(
        "demanding",
        demanding,
        recv(100, optional=True),
        f'\n  <recv response="420"><action>{header_check("Unsupported", "^ *100rel, Foo$", "u")}</action></recv>',
        ack("[branch-3]"),
        plain,
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack().replace("CSeq: 1 ACK", "CSeq: 2 ACK"),
        replacing,
        f'\n  <recv response="420"><action>{header_check("Unsupported", "^ *replaces$", "r")}</action></recv>',
        ack("[branch-2]").replace("CSeq: 1 ACK", "CSeq: 3 ACK"),
        in_dialog("BYE", 4),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        incoming = _incoming(app)
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        gone = app.wait_for("Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid)
        assert gone["data"]["resultInformation"]["code"] == 200
        # The refused INVITE never became a call: one IncomingCall, for the second.
        assert len(app.events("Microsoft.Communication.IncomingCall")) == 1
        assert sip_metric(sip, "bad_extension") == refused + 2
    finally:
        uac.stop()


def test_a_cancel_is_never_refused_for_what_it_requires(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path
) -> None:
    # RFC 3261 8.2.2.3: Require on a CANCEL is to be ignored.
    sip.own_number(NUMBER)
    xml = _cancelled_scenario("Require: 100rel")
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER).start()
    try:
        incoming = _incoming(app)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        assert sip.get_call(incoming["serverCallId"])["state"] == "disconnected"
    finally:
        uac.stop()
