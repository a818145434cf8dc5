"""RFC 4028 session timers over the trunk, with SIPp as the far end: a caller's refreshes (UPDATE and
re-INVITE) keep its call up; a caller that stops refreshing, or a trunk that stops answering our refreshes,
gets BYE and the app CallDisconnected (so does a trunk that said it would refresh and never does); too
short an interval is refused 422, and our call out asks again after one; a peer without the extension is
left alone, and one that requires it of a server with timers off hears 420. The server's clock is
virtual: the test moves it past a 90 s interval in milliseconds (SIPp waits a few real seconds before
each refresh, so that the clock has moved first)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, PhoneNumberIdentifier
from azure.communication.phonenumbers.siprouting import SipTrunk, SipTrunkRoute

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.conftest import _free_udp_and_tcp_port, sip_metric
from tests.sip.sipp import Sipp, ack, header_check, in_dialog, invite, pause, recv, scenario, uas_reply

NUMBER = "+14255551212"
CALLER = "+12065550100"
FAR = "+14255550177"
TIMER_HEADERS = "Supported: timer\nSession-Expires: 90;refresher=uac\nMin-SE: 90"
REFRESH_HEADERS = "Max-Forwards: 70\n      Supported: timer\n      Session-Expires: 90;refresher=uac"
_TIMER_200 = "      Session-Expires: 90;refresher=uac\n      Require: timer\n"  # lines of a SIPp 200
_SDP = (
    "v=0\no=sipp 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n"
    "m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv"
)


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    """A trunk whose transactions time out in 64 x 50 ms: a refresh nobody answers fails in seconds."""
    port = _free_udp_and_tcp_port()
    server = CallgridServer(
        tmp_path_factory.mktemp("callgrid-sip-timers"),
        tls_dir=callgrid_tls_dir,
        extra_args=["--sip-port", str(port), "--sip-allow", "127.0.0.1/32"],
        env={"CALLGRID_SIP_T1_MS": "50"},
    )
    server.sip_port = port  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def _remote(server: CallgridServer) -> str:
    return f"127.0.0.1:{server.sip_port}"  # type: ignore[attr-defined]


def _answer(app: WebhookReceiver, automation: CallAutomationClient) -> tuple[str, str]:
    """The app answers the incoming call; (serverCallId, callConnectionId) once it is connected."""
    incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
    ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
    app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
    return incoming["serverCallId"], ccid


def _wait_metric(server: CallgridServer, name: str, at_least: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = sip_metric(server, name)
        if value >= at_least or time.monotonic() > deadline:
            assert value >= at_least, f"callgrid_sip_{name} is {value}, not {at_least} or more"
            return value
        time.sleep(0.05)


def _gone(app: WebhookReceiver, ccid: str) -> dict[str, Any]:
    event: dict[str, Any] = app.wait_for(
        "Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
    )
    return event


def _recv_200_checking(*checks: str) -> str:
    return f'\n  <recv response="200" rrs="true"><action>{"".join(checks)}</action></recv>'


def test_a_callers_refreshes_by_update_and_reinvite_keep_the_call_up(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    received, expired = sip_metric(sip, "session_refresh_received"), sip_metric(sip, "session_expired")
    update = in_dialog("UPDATE", 2).replace("Max-Forwards: 70", REFRESH_HEADERS)
    reinvite = in_dialog("INVITE", 3, _SDP, "application/sdp").replace("Max-Forwards: 70", REFRESH_HEADERS)
    reack = ack().replace("CSeq: 1 ACK", "CSeq: 3 ACK")
    xml = scenario(
        "refreshing-caller",
        invite(caller=CALLER, headers=TIMER_HEADERS),
        recv(100, optional=True),
        recv(180),
        _recv_200_checking(
            header_check("Session-Expires", "^ *90;refresher=uac$", "se"),
            header_check("Require", "timer", "req"),
        ),
        ack(),
        pause(3000),
        update,
        _recv_200_checking(header_check("Session-Expires", "^ *90;refresher=uac$", "se2")),
        pause(3000),
        reinvite,
        recv(200),
        reack,
        pause(3000),
        in_dialog("BYE", 4),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        _, ccid = _answer(app, automation)
        # Answered at t; unrefreshed, the call would end at t + 60 (90 s less a third).
        sip.advance(50)
        assert sip_metric(sip, "session_refresh_received") == received, "the UPDATE came before the clock moved"
        _wait_metric(sip, "session_refresh_received", received + 1)  # the UPDATE at t + 50: on to t + 110
        sip.advance(50)
        _wait_metric(sip, "session_refresh_received", received + 2)  # the re-INVITE at t + 100: on to t + 160
        sip.advance(50)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        assert _gone(app, ccid)["data"]["resultInformation"]["code"] == 200
        assert sip_metric(sip, "session_expired") == expired
    finally:
        uac.stop()


def test_a_caller_that_stops_refreshing_gets_bye_and_the_app_sees_the_call_disconnected(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    expired = sip_metric(sip, "session_expired")
    xml = scenario(
        "silent-caller",
        # No refresher named: the caller supports timers, so we answer that it refreshes.
        invite(caller=CALLER, headers="Supported: timer\nSession-Expires: 90"),
        recv(100, optional=True),
        recv(180),
        _recv_200_checking(
            header_check("Session-Expires", "^ *90;refresher=uac$", "se"),
            header_check("Require", "timer", "req"),
        ),
        ack(),
        '\n  <recv request="BYE"/>',
        uas_reply("200 OK"),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        scid, ccid = _answer(app, automation)
        sip.advance(59)
        assert sip_metric(sip, "session_expired") == expired
        assert sip.get_call(scid)["state"] == "connected"
        sip.advance(2)  # past 90 s less RFC 4028's margin (a third of 90): BYE
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        assert _gone(app, ccid)["data"]["resultInformation"]["code"] == 200
        assert sip_metric(sip, "session_expired") == expired + 1
    finally:
        uac.stop()


def test_too_short_a_session_interval_is_refused_422_with_our_min_se_and_the_caller_asks_again(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    refused = sip_metric(sip, "session_interval_too_small")
    again = invite(caller=CALLER, headers=TIMER_HEADERS).replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    xml = scenario(
        "hasty-caller",
        invite(caller=CALLER, headers="Supported: timer\nSession-Expires: 30;refresher=uac\nMin-SE: 30"),
        recv(100, optional=True),
        f'\n  <recv response="422"><action>{header_check("Min-SE", "^ *90$", "min")}</action></recv>',
        ack("[branch-3]"),
        again,
        recv(100, optional=True),
        recv(180),
        _recv_200_checking(header_check("Session-Expires", "^ *90;refresher=uac$", "se")),
        ack().replace("CSeq: 1 ACK", "CSeq: 2 ACK"),
        pause(500),
        in_dialog("BYE", 3),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        _, ccid = _answer(app, automation)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        _gone(app, ccid)
        assert sip_metric(sip, "session_interval_too_small") == refused + 1
        # The refused INVITE never became a call: one IncomingCall, for the second.
        assert len(app.events("Microsoft.Communication.IncomingCall")) == 1
    finally:
        uac.stop()


def test_a_caller_without_session_timers_is_left_alone(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    timers = sip_metric(sip, "session_timers")
    xml = scenario(
        "plain-caller",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(3000),
        # An UPDATE with an offer (hold), as RFC 3311 allows: answered like a re-INVITE, and no timer starts.
        in_dialog("UPDATE", 2, _SDP.replace("a=sendrecv", "a=sendonly"), "application/sdp"),
        '\n  <recv response="200"><action><ereg regexp="a=recvonly" search_in="body" check_it="true"'
        ' assign_to="held"/><log message="[$held]"/></action></recv>',
        in_dialog("BYE", 3),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        _, ccid = _answer(app, automation)
        sip.advance(4 * 3600)  # hours without a refresh: nothing was agreed, nothing expires
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        assert _gone(app, ccid)["data"]["resultInformation"]["code"] == 200
        answer = run.trace.split("SIP/2.0 200 OK", 1)[1].split("\n\n", 1)[0]
        assert "Session-Expires" not in answer and "Require" not in answer
        assert sip_metric(sip, "session_timers") == timers
    finally:
        uac.stop()


def test_we_refresh_a_caller_that_asks_us_to_with_a_reinvite_when_it_does_not_allow_update(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    refreshed = sip_metric(sip, "session_refreshed")
    xml = scenario(
        "lazy-caller",
        invite(caller=CALLER, headers="Supported: timer\nSession-Expires: 90;refresher=uas"),
        recv(100, optional=True),
        recv(180),
        _recv_200_checking(header_check("Session-Expires", "^ *90;refresher=uas$", "se")),
        ack(),
        # Our refresh at the half interval: a re-INVITE with the SDP of our 200 (the caller's Allow is unsaid).
        f"""
  <recv request="INVITE">
    <action>
      {header_check("Session-Expires", "^ *90;refresher=uac$", "rse")}
      <ereg regexp="m=audio" search_in="body" check_it="true" assign_to="sdp"/><log message="[$sdp]"/>
    </action>
  </recv>""",
        uas_reply("200 OK", sdp=True).replace("      Content-Length", _TIMER_200 + "      Content-Length"),
        '\n  <recv request="ACK"/>',
        '\n  <recv request="BYE"/>',
        uas_reply("200 OK"),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        _, ccid = _answer(app, automation)
        sip.advance(45)
        _wait_metric(sip, "session_refreshed", refreshed + 1)
        sip.advance(40)  # refreshed at t + 45: the next refresh at t + 90, no expiry before t + 105
        automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()


def _far_end_that_answers_one_refresh() -> str:
    """A trunk's far end that asks callgrid to refresh (by UPDATE, which it allows), answers the first
    UPDATE, and is gone: its SIPp exits and nobody listens on its port any more."""
    timer = _TIMER_200
    allow = "      Allow: INVITE, ACK, CANCEL, BYE, UPDATE\n"
    return scenario(
        "vanishing-far-end",
        f"""
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      {header_check("Session-Expires", "^ *1800$", "offered")}
      {header_check("Supported", "timer", "sup")}
      {header_check("Min-SE", "^ *90$", "min")}
    </action>
  </recv>""",
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True),
        uas_reply("200 OK", tag=True, sdp=True).replace("      Content-Length", timer + allow + "      Content-Length"),
        '\n  <recv request="ACK" crlf="true"/>',
        f"""
  <recv request="UPDATE">
    <action>{header_check("Session-Expires", "^ *90;refresher=uac$", "rse")}</action>
  </recv>""",
        uas_reply("200 OK").replace("      Content-Length", timer + "      Content-Length"),
    )


def test_a_far_end_that_stops_answering_our_refreshes_gets_bye_and_the_app_sees_the_call_disconnected(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(NUMBER)
    refreshed, failed = sip_metric(sip, "session_refreshed"), sip_metric(sip, "session_refresh_failed")
    far = Sipp(tmp_path, "far", _far_end_that_answers_one_refresh(), remote=None)
    sip_routing.set_trunks([SipTrunk(fqdn="sbc.localhost", sip_signaling_port=far.port)])
    sip_routing.set_routes([SipTrunkRoute(name="all", number_pattern=r"\+\d+", trunks=["sbc.localhost"])])
    far.start()
    try:
        created = automation.create_call(
            PhoneNumberIdentifier(FAR), app.url + "/callbacks", source_caller_id_number=PhoneNumberIdentifier(NUMBER)
        )
        ccid = created.call_connection_id
        assert ccid is not None
        app.wait_for(
            "Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        sip.advance(45)  # our UPDATE at the half interval, answered
        run = far.wait()
        assert run.returncode == 0, run.out + run.trace
        _wait_metric(sip, "session_refreshed", refreshed + 1)
        sip.advance(45)  # the next goes unanswered: after 64 x T1, BYE, and the call is over
        gone = _gone(app, ccid)
        assert gone["data"]["resultInformation"]["code"] == 200
        assert sip_metric(sip, "session_refresh_failed") == failed + 1
    finally:
        far.stop()


def _far_end_that_wants_an_hour_and_to_refresh_itself() -> str:
    """A trunk's far end whose Min-SE is an hour (422 to callgrid's 1800 s), that then answers the INVITE
    asked again saying it refreshes itself, and never does: callgrid's BYE comes when the hour is nearly up."""
    hour = _TIMER_200.replace("90;refresher=uac", "3600;refresher=uas")
    return scenario(
        "slow-far-end",
        '\n  <recv request="INVITE" crlf="true"/>',
        uas_reply("422 Session Interval Too Small", tag=True).replace(
            "      Content-Length", "      Min-SE: 3600\n      Content-Length"
        ),
        '\n  <recv request="ACK"/>',
        f"""
  <recv request="INVITE" rrs="true">
    <action>
      {header_check("Session-Expires", "^ *3600$", "asked")}
      {header_check("Min-SE", "^ *3600$", "min")}
    </action>
  </recv>""",
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True),
        uas_reply("200 OK", tag=True, sdp=True).replace("      Content-Length", hour + "      Content-Length"),
        '\n  <recv request="ACK" crlf="true"/>',
        '\n  <recv request="BYE"/>',
        uas_reply("200 OK", tag=True),
    )


def test_a_call_out_asks_again_after_422_and_ends_when_the_far_end_never_refreshes(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(NUMBER)
    raised, expired = sip_metric(sip, "session_interval_raised"), sip_metric(sip, "session_expired")
    far = Sipp(tmp_path, "far", _far_end_that_wants_an_hour_and_to_refresh_itself(), remote=None)
    sip_routing.set_trunks([SipTrunk(fqdn="sbc.localhost", sip_signaling_port=far.port)])
    sip_routing.set_routes([SipTrunkRoute(name="all", number_pattern=r"\+\d+", trunks=["sbc.localhost"])])
    far.start()
    try:
        created = automation.create_call(
            PhoneNumberIdentifier(FAR), app.url + "/callbacks", source_caller_id_number=PhoneNumberIdentifier(NUMBER)
        )
        ccid = created.call_connection_id
        assert ccid is not None
        app.wait_for(
            "Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        assert sip_metric(sip, "session_interval_raised") == raised + 1
        sip.advance(3600 - 32 - 1)  # the far end should have refreshed by now; we wait up to 32 s before expiry
        assert sip_metric(sip, "session_expired") == expired
        sip.advance(2)
        run = far.wait()
        assert run.returncode == 0, run.out + run.trace
        assert _gone(app, ccid)["data"]["resultInformation"]["code"] == 200
        assert sip_metric(sip, "session_expired") == expired + 1
    finally:
        far.stop()


def test_with_session_timers_off_a_caller_that_requires_them_is_refused_420(
    tmp_path: Path, callgrid_tls_dir: Path
) -> None:
    port = _free_udp_and_tcp_port()
    server = CallgridServer(
        tmp_path / "off",
        tls_dir=callgrid_tls_dir,
        extra_args=["--sip-port", str(port), "--sip-allow", "127.0.0.1/32", "--sip-session-expires", "0"],
    )
    server.start()
    try:
        server.own_number(NUMBER)
        xml = scenario(
            "demanding-caller",
            invite(caller=CALLER, headers="Require: timer\nSupported: timer\nSession-Expires: 90"),
            recv(100, optional=True),
            f'\n  <recv response="420"><action>{header_check("Unsupported", "timer", "u")}</action></recv>',
            ack("[branch-3]"),
        )
        uac = Sipp(tmp_path, "uac", xml, remote=f"127.0.0.1:{port}", service=NUMBER, caller=CALLER).start()
        try:
            run = uac.wait()
            assert run.returncode == 0, run.out + run.trace
        finally:
            uac.stop()
    finally:
        server.stop()
