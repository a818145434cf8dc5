"""Calls that leave over the trunk: trunks and routes set with the official SipRoutingClient, the first
route whose numberPattern matches chooses the trunk, and the far end (SIPp as the SBC) answers, refuses
or rings; the app hears it as it would from a simulated phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, PhoneNumberIdentifier
from azure.communication.phonenumbers.siprouting import SipTrunk, SipTrunkRoute
from azure.core.exceptions import HttpResponseError

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.sipp import Sipp, ack, invite, pause, recv, scenario, uas_answer, uas_refuse, uas_reply, uas_ring

OWNED = "+14255551212"
US_NUMBER = "+14255550177"
UK_NUMBER = "+447700900123"


def _routes(sip_routing: Any, us_port: int, uk_port: int) -> None:
    sip_routing.set_trunks(
        [
            SipTrunk(fqdn="sbc-us.localhost", sip_signaling_port=us_port),
            SipTrunk(fqdn="sbc-uk.localhost", sip_signaling_port=uk_port),
        ]
    )
    sip_routing.set_routes(
        [
            SipTrunkRoute(name="uk", number_pattern=r"\+44\d+", trunks=["sbc-uk.localhost"]),
            SipTrunkRoute(name="everything", number_pattern=r"\+\d+", trunks=["sbc-us.localhost"]),
        ]
    )


def _call_out(automation: CallAutomationClient, app: WebhookReceiver, number: str) -> str:
    """The app calls `number` from the owned number: the call leaves over the trunks."""
    created = automation.create_call(
        PhoneNumberIdentifier(number), app.url + "/callbacks", source_caller_id_number=PhoneNumberIdentifier(OWNED)
    )
    assert created.call_connection_id is not None
    return created.call_connection_id


def test_trunks_and_routes_round_trip_through_the_sdk(sip: CallgridServer, sip_routing: Any) -> None:
    _routes(sip_routing, 5071, 5072)
    trunks = {t.fqdn: t.sip_signaling_port for t in sip_routing.list_trunks()}
    assert trunks == {"sbc-us.localhost": 5071, "sbc-uk.localhost": 5072}
    routes = [(r.name, r.number_pattern, r.trunks) for r in sip_routing.list_routes()]
    assert routes == [("uk", r"\+44\d+", ["sbc-uk.localhost"]), ("everything", r"\+\d+", ["sbc-us.localhost"])]
    assert sip_routing.get_trunk("sbc-uk.localhost").sip_signaling_port == 5072
    # A trunk a route uses cannot go; a route naming an unknown trunk is refused.
    with pytest.raises(HttpResponseError) as used:
        sip_routing.delete_trunk("sbc-uk.localhost")
    assert used.value.status_code == 422
    with pytest.raises(HttpResponseError) as missing:
        sip_routing.set_routes([SipTrunkRoute(name="x", number_pattern=r"\+1.*", trunks=["nowhere.localhost"])])
    assert missing.value.status_code == 422
    with pytest.raises(HttpResponseError) as bad:
        sip_routing.set_routes([SipTrunkRoute(name="x", number_pattern="(unclosed", trunks=[])])
    assert bad.value.status_code == 400
    sip_routing.set_routes([])
    sip_routing.delete_trunk("sbc-uk.localhost")
    assert [t.fqdn for t in sip_routing.list_trunks()] == ["sbc-us.localhost"]


def test_a_route_whose_pattern_quantifies_an_anchor_is_taken_as_dotnet_takes_it(
    sip: CallgridServer, sip_routing: Any
) -> None:
    # The service reads numberPattern as a .NET regex, which lets '^' be repeated. Microsoft's JavaScript
    # quickstart writes "^\\+1(\\d{10})$" in a plain string literal, so what reaches the service is
    # '^+1(d{10})$'; Python's own reading ("nothing to repeat") must not refuse it.
    sip_routing.set_trunks([SipTrunk(fqdn="sbc-us.localhost", sip_signaling_port=5071)])
    as_sent = ["^+1(d{10})$", "^+d+$"]
    sip_routing.set_routes(
        [SipTrunkRoute(name=f"r{i}", number_pattern=p, trunks=["sbc-us.localhost"]) for i, p in enumerate(as_sent)]
    )
    assert [r.number_pattern for r in sip_routing.list_routes()] == as_sent
    with pytest.raises(HttpResponseError) as bad:  # still refused: what .NET refuses too
        sip_routing.set_routes([SipTrunkRoute(name="x", number_pattern="+1", trunks=["sbc-us.localhost"])])
    assert bad.value.status_code == 400
    sip_routing.set_routes([])


def test_a_created_call_leaves_over_the_first_matching_route_and_is_answered(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    us = Sipp(tmp_path, "us", uas_answer(), remote=None)
    uk = Sipp(tmp_path, "uk", uas_answer(), remote=None)
    _routes(sip_routing, us.port, uk.port)
    uk.start()
    try:
        ccid = _call_out(automation, app, UK_NUMBER)
        app.wait_for(
            "Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
        run = uk.wait()
        assert run.returncode == 0, run.out + run.trace
        invite_sent = run.trace.split("INVITE sip:", 1)[1]
        assert invite_sent.startswith(UK_NUMBER + "@sbc-uk.localhost:")
        assert f"P-Asserted-Identity: <sip:{OWNED}@" in run.trace
    finally:
        uk.stop()
        us.stop()


@pytest.mark.parametrize(("status", "code"), [("486 Busy Here", 486), ("603 Decline", 603)])
def test_the_far_end_refusing_fails_the_created_call(
    sip: CallgridServer,
    sip_routing: Any,
    automation: CallAutomationClient,
    app: WebhookReceiver,
    tmp_path: Path,
    status: str,
    code: int,
) -> None:
    sip.own_number(OWNED)
    us = Sipp(tmp_path, "us", uas_refuse(status), remote=None)
    _routes(sip_routing, us.port, us.port)
    us.start()
    try:
        ccid = _call_out(automation, app, US_NUMBER)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        assert failed["data"]["resultInformation"]["code"] == code
        run = us.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        us.stop()


def test_a_far_end_that_rings_past_the_timeout_is_cancelled(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    us = Sipp(tmp_path, "us", uas_ring(), remote=None)
    _routes(sip_routing, us.port, us.port)
    us.start()
    try:
        ccid = _call_out(automation, app, US_NUMBER)
        app.wait_until(lambda: "180 Ringing" in us.trace(), timeout=20)
        sip.advance(31)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        assert failed["data"]["resultInformation"]["code"] == 408
        run = us.wait()
        assert run.returncode == 0, run.out + run.trace
    finally:
        us.stop()


def test_a_call_redirected_to_an_external_number_is_answered_over_the_trunk(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    far = Sipp(tmp_path, "far", uas_answer(), remote=None)
    _routes(sip_routing, far.port, far.port)
    far.start()
    caller_xml = scenario(
        "caller",
        invite(),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(800),
        _bye(),
        recv(200),
    )
    caller = Sipp(tmp_path, "caller", caller_xml, remote=f"127.0.0.1:{sip.sip_port}", service=OWNED).start()  # type: ignore[attr-defined]
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        automation.redirect_call(incoming["incomingCallContext"], PhoneNumberIdentifier(US_NUMBER))
        run = caller.wait()
        assert run.returncode == 0, run.out + run.trace
        far_run = far.wait()
        assert far_run.returncode == 0, far_run.out + far_run.trace
        assert f"INVITE sip:{US_NUMBER}@sbc-us.localhost" in far_run.trace
        # The far end sees who called: the PSTN caller, as the redirect keeps the caller.
        assert "P-Asserted-Identity: <sip:+12065550100@" in far_run.trace
        app.wait_for("Microsoft.Communication.CallEnded", timeout=20)
    finally:
        caller.stop()
        far.stop()


def _bye() -> str:
    from tests.sip.sipp import in_dialog

    return in_dialog("BYE", 2)


def test_a_participant_added_over_the_trunk_joins_when_the_far_end_answers(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    far = Sipp(tmp_path, "far", uas_answer(), remote=None)
    _routes(sip_routing, far.port, far.port)
    far.start()
    caller_xml = scenario(
        "caller", invite(), recv(100, optional=True), recv(180), recv(200, rrs=True), ack(),
        '\n  <recv request="BYE" timeout="60000"/>', uas_reply("200 OK"),
    )  # fmt: skip
    caller = Sipp(tmp_path, "caller", caller_xml, remote=f"127.0.0.1:{sip.sip_port}", service=OWNED).start()  # type: ignore[attr-defined]
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        connection = automation.get_call_connection(ccid)
        connection.add_participant(
            PhoneNumberIdentifier(US_NUMBER), source_caller_id_number=PhoneNumberIdentifier(OWNED)
        )
        added = app.wait_for(
            "Microsoft.Communication.AddParticipantSucceeded",
            lambda e: e["data"]["callConnectionId"] == ccid,
            timeout=20,
        )
        assert added["data"]["participant"]["rawId"] == "4:" + US_NUMBER
        connection.hang_up(is_for_everyone=True)
        for sipp in (caller, far):
            run = sipp.wait()
            assert run.returncode == 0, run.out + run.trace
    finally:
        caller.stop()
        far.stop()


def test_the_far_end_hanging_up_ends_a_two_party_call(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    from tests.sip.sipp import uas_answer_then_hang_up

    sip.own_number(OWNED)
    far = Sipp(tmp_path, "far", uas_answer_then_hang_up(800), remote=None)
    _routes(sip_routing, far.port, far.port)
    far.start()
    try:
        ccid = _call_out(automation, app, US_NUMBER)
        app.wait_for(
            "Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        run = far.wait()
        assert run.returncode == 0, run.out + run.trace
        gone = app.wait_for(
            "Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        assert gone["data"]["resultInformation"]["code"] == 200
    finally:
        far.stop()


def test_a_trunk_answering_503_over_udp_hands_the_call_to_the_next_route(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    busy = Sipp(tmp_path, "busy", uas_refuse("503 Service Unavailable", ring=False), remote=None)
    spare = Sipp(tmp_path, "spare", uas_answer(), remote=None)
    sip_routing.set_trunks(
        [
            SipTrunk(fqdn="sbc-a.localhost", sip_signaling_port=busy.port),
            SipTrunk(fqdn="sbc-b.localhost", sip_signaling_port=spare.port),
        ]
    )
    sip_routing.set_routes(
        [
            SipTrunkRoute(name="a", number_pattern=r"\+1\d+", trunks=["sbc-a.localhost"]),
            SipTrunkRoute(name="b", number_pattern=r"\+1\d+", trunks=["sbc-b.localhost"]),
        ]
    )
    busy.start()
    spare.start()
    try:
        ccid = _call_out(automation, app, US_NUMBER)
        app.wait_for(
            "Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=20
        )
        automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
        for sbc in (busy, spare):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
        assert "Via: SIP/2.0/UDP" in spare.trace()
    finally:
        busy.stop()
        spare.stop()
