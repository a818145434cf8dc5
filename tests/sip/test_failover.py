"""Trunk failover and calls over TCP: a server that places its calls to the trunks over TCP, with a
short T1 (100 ms) so that a trunk which never answers times out in 6.4 s (64 x T1) instead of 32.

As Azure documents it, a call tries the routes that match its number in order, the trunks of a route in
random order, and goes on to the next trunk when one answers 408, 503 or 504, or cannot be reached; not
once a trunk has rung (a 1xx beyond 100). A TCP connection that closes or resets before the answer is
such a failure too (RFC 3261 treats a transport error as a 503); one that closed between calls is opened
again for the next. SIPp stands for each SBC, listening on TCP; a caller whose TCP connection drops
mid-dialog is a plain socket."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, PhoneNumberIdentifier
from azure.communication.phonenumbers.siprouting import SipTrunk, SipTrunkRoute

from callgrid.platform import sip_routing
from callgrid.testing import CallgridServer, WebhookReceiver
from callgrid.testing.server import free_port
from tests.sip.conftest import _free_udp_and_tcp_port, sip_metric
from tests.sip.sipp import (
    Sipp,
    ack,
    header_check,
    in_dialog,
    invite,
    pause,
    recv,
    scenario,
    uas_answer,
    uas_refuse,
    uas_reply,
)

CALLER = "+12065550100"
_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

OWNED = "+14255551212"
TARGET = "+14255550177"


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    port = _free_udp_and_tcp_port()
    server = CallgridServer(
        tmp_path_factory.mktemp("callgrid-sip-tcp"),
        tls_dir=callgrid_tls_dir,
        extra_args=["--sip-port", str(port), "--sip-allow", "127.0.0.1/32", "--sip-transport", "tcp"],
        env={"CALLGRID_SIP_T1_MS": "100"},
    )
    server.sip_port = port  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def _two_routes(sip_routing: Any, first_port: int, second_port: int) -> None:
    """Two routes for the same numbers, one trunk each: the order is the routes' (no shuffle within)."""
    sip_routing.set_trunks(
        [
            SipTrunk(fqdn="sbc1.localhost", sip_signaling_port=first_port),
            SipTrunk(fqdn="sbc2.localhost", sip_signaling_port=second_port),
        ]
    )
    sip_routing.set_routes(
        [
            SipTrunkRoute(name="primary", number_pattern=r"\+1\d{10}", trunks=["sbc1.localhost"]),
            SipTrunkRoute(name="backup", number_pattern=r"\+1\d{10}", trunks=["sbc2.localhost"]),
        ]
    )


def _create(automation: CallAutomationClient, app: WebhookReceiver) -> str:
    created = automation.create_call(
        PhoneNumberIdentifier(TARGET), app.url + "/callbacks", source_caller_id_number=PhoneNumberIdentifier(OWNED)
    )
    ccid = created.call_connection_id
    assert ccid is not None
    return ccid


def _connected_then_hung_up(automation: CallAutomationClient, app: WebhookReceiver, ccid: str) -> None:
    app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30)
    automation.get_call_connection(ccid).hang_up(is_for_everyone=True)


def _silent() -> str:
    """An SBC that takes the INVITE and never answers it."""
    return scenario("uas-silent", '\n  <recv request="INVITE"/>', '\n  <pause milliseconds="8000"/>')


def _ring_then(status: str) -> str:
    """An SBC that rings (180), then fails with `status`."""
    return scenario(
        "uas-ring-then-fail",
        '\n  <recv request="INVITE"/>',
        uas_reply("180 Ringing", tag=True),
        '\n  <pause milliseconds="300"/>',
        uas_reply(status, tag=True),
        '\n  <recv request="ACK"/>',
    )


@pytest.mark.parametrize("first", ["503 Service Unavailable", "504 Server Time-out", "408 Request Timeout"])
def test_a_trunk_that_fails_hands_the_call_to_the_next(
    sip: CallgridServer,
    sip_routing: Any,
    automation: CallAutomationClient,
    app: WebhookReceiver,
    tmp_path: Path,
    first: str,
) -> None:
    sip.own_number(OWNED)
    failing = Sipp(tmp_path, "sbc1", uas_refuse(first, ring=False), remote=None, transport="t1")
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, failing.port, answering.port)
    before = sip_metric(sip, "trunk_failover")
    failing.start()
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        for sbc in (failing, answering):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
        # Both INVITEs came over TCP, to each trunk's FQDN.
        assert "Via: SIP/2.0/TCP" in failing.trace() and "Via: SIP/2.0/TCP" in answering.trace()
        assert f"INVITE sip:{TARGET}@sbc2.localhost:" in answering.trace()
        assert sip_metric(sip, "trunk_failover") == before + 1
    finally:
        failing.stop()
        answering.stop()


def test_a_trunk_that_never_answers_times_out_and_the_next_takes_the_call(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    silent = Sipp(tmp_path, "sbc1", _silent(), remote=None, transport="t1")
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, silent.port, answering.port)
    before = sip_metric(sip, "outbound_timeout")
    silent.start()
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        run = answering.wait()
        assert run.returncode == 0, run.out + run.trace
        assert "INVITE sip:" in silent.trace()
        assert sip_metric(sip, "outbound_timeout") == before + 1
    finally:
        silent.stop()
        answering.stop()


def test_a_trunk_that_refuses_the_connection_is_skipped(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, free_port(), answering.port)  # nothing listens on the first
    before = sip_metric(sip, "trunk_unreachable")
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        run = answering.wait()
        assert run.returncode == 0, run.out + run.trace
        assert sip_metric(sip, "trunk_unreachable") == before + 1
    finally:
        answering.stop()


def test_a_trunk_that_rang_before_failing_does_not_fail_over(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    rang = Sipp(tmp_path, "sbc1", _ring_then("503 Service Unavailable"), remote=None, transport="t1")
    spare = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, rang.port, spare.port)
    rang.start()
    spare.start()
    try:
        ccid = _create(automation, app)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        assert failed["data"]["resultInformation"]["code"] != 200
        run = rang.wait()
        assert run.returncode == 0, run.out + run.trace
        assert "INVITE" not in spare.trace()  # a second phone must not ring
    finally:
        rang.stop()
        spare.stop()


def test_the_last_trunks_failure_reaches_the_app(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    refusing = uas_refuse("503 Service Unavailable", ring=False)
    first = Sipp(tmp_path, "sbc1", refusing, remote=None, transport="t1")
    second = Sipp(tmp_path, "sbc2", refusing, remote=None, transport="t1")
    _two_routes(sip_routing, first.port, second.port)
    first.start()
    second.start()
    try:
        ccid = _create(automation, app)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        assert failed["data"]["resultInformation"]["code"] != 200
        for sbc in (first, second):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
    finally:
        first.stop()
        second.stop()


async def test_routes_are_tried_in_order_and_a_routes_trunks_in_random_order(tmp_path: Path) -> None:
    from callgrid.store import open_store

    store = await open_store(f"sqlite:///{tmp_path / 'routes.db'}")
    try:
        async with store.transaction() as tx:
            await sip_routing.update(
                tx,
                {
                    "trunks": {
                        name: {"sipSignalingPort": 5060 + i} for i, name in enumerate(["a.x", "b.x", "c.x", "d.x"])
                    },
                    "routes": [
                        {"name": "uk", "numberPattern": r"\+44\d+", "trunks": ["d.x"]},
                        {"name": "us", "numberPattern": r"\+1\d+", "trunks": ["a.x", "b.x"]},
                        {"name": "any", "numberPattern": r"\+\d+", "trunks": ["c.x", "a.x"]},
                    ],
                },
            )
            orders = set()
            rng = random.Random(7)
            for _ in range(40):
                trunks = await sip_routing.trunks_for(tx, "+14255550100", rng)
                orders.add(tuple(t.fqdn for t in trunks))
            uk = await sip_routing.trunks_for(tx, "+447700900123", rng)
            nothing = await sip_routing.trunks_for(tx, "12345", rng)
    finally:
        await store.close()
    # The first matching route's trunks first, in either order; a trunk named again is tried once.
    assert orders == {("a.x", "b.x", "c.x"), ("b.x", "a.x", "c.x")}
    assert [t.fqdn for t in uk] == ["d.x", "c.x", "a.x"] or [t.fqdn for t in uk] == ["d.x", "a.x", "c.x"]
    assert nothing == []


def _one_route(sip_routing: Any, port: int) -> None:
    sip_routing.set_trunks([SipTrunk(fqdn="sbc1.localhost", sip_signaling_port=port)])
    sip_routing.set_routes([SipTrunkRoute(name="only", number_pattern=r"\+1\d{10}", trunks=["sbc1.localhost"])])


def test_an_sbc_that_closed_its_connection_after_a_call_gets_the_next_on_a_new_one(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    first = Sipp(tmp_path, "sbc-first", uas_answer(), remote=None, transport="t1")
    _one_route(sip_routing, first.port)
    first.start()
    try:
        _connected_then_hung_up(automation, app, _create(automation, app))
        run = first.wait()  # the SBC is gone, and its end of the connection with it
        assert run.returncode == 0, run.out + run.trace
    finally:
        first.stop()
    # The SBC is back on the same port: the next call leaves on a new connection and is answered.
    second = Sipp(tmp_path, "sbc-second", uas_answer(), remote=None, transport="t1", port=first.port).start()
    try:
        _wait_listening(second.port)
        _connected_then_hung_up(automation, app, _create(automation, app))
        run = second.wait()
        assert run.returncode == 0, run.out + run.trace
        assert f"INVITE sip:{TARGET}@sbc1.localhost:" in second.trace()
    finally:
        second.stop()


def _wait_listening(port: int) -> None:
    """Until a TCP socket listens on `port` (read from /proc, not by connecting: SIPp would see a peer)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as f:
                for row in f.read().splitlines()[1:]:
                    local, state = row.split()[1], row.split()[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on TCP port {port}")


def _trying_then_gone() -> str:
    """An SBC that takes the INVITE, says 100 Trying, and goes away (its TCP connection closes)."""
    return scenario("uas-trying-then-gone", '\n  <recv request="INVITE"/>', uas_reply("100 Trying"))


def test_a_trunk_whose_connection_closes_before_it_answers_hands_the_call_to_the_next(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    gone = Sipp(tmp_path, "sbc1", _trying_then_gone(), remote=None, transport="t1")
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, gone.port, answering.port)
    before = (sip_metric(sip, "outbound_transport_error"), sip_metric(sip, "trunk_failover"))
    gone.start()
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        for sbc in (gone, answering):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
        after = (sip_metric(sip, "outbound_transport_error"), sip_metric(sip, "trunk_failover"))
        assert after == (before[0] + 1, before[1] + 1)
    finally:
        gone.stop()
        answering.stop()


def _resetting_sbc() -> tuple[socket.socket, threading.Thread]:
    """An SBC that takes the INVITE over TCP and resets the connection (RST, not FIN) without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65535)
                if not chunk:
                    break
                data += chunk
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_trunk_that_resets_its_connection_hands_the_call_to_the_next(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    resetting, thread = _resetting_sbc()
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, resetting.getsockname()[1], answering.port)
    before = sip_metric(sip, "outbound_transport_error")
    answering.start()
    try:
        _connected_then_hung_up(automation, app, _create(automation, app))
        run = answering.wait()
        assert run.returncode == 0, run.out + run.trace
        assert sip_metric(sip, "outbound_transport_error") == before + 1
    finally:
        answering.stop()
        resetting.close()
        thread.join(timeout=10)


class _TcpCaller:
    """A caller over TCP that listens on its own port (its Via and Contact) besides the connection it calls
    on, as an SBC does: callgrid can open a new connection to it when the first one is gone."""

    def __init__(self, server: CallgridServer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(20)
        self.port = self.listener.getsockname()[1]
        self.server_port = server.sip_port  # type: ignore[attr-defined]
        self.calling = socket.create_connection(("127.0.0.1", self.server_port), timeout=20)

    def request(self, method: str, cseq: int, *, to_tag: str = "", body: str = "") -> bytes:
        to = f"<sip:{OWNED}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (
            f"{method} sip:{OWNED}@127.0.0.1:{self.server_port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{self.port};branch=z9hG4bK{method.lower()}{cseq}{time.monotonic_ns()}\r\n"
            f"From: <sip:{CALLER}@127.0.0.1:{self.port}>;tag=tcpcaller\r\n"
            f"To: {to}\r\n"
            f"Call-ID: tcp-{self.port}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{CALLER}@127.0.0.1:{self.port};transport=tcp>\r\n"
            f"Max-Forwards: 70\r\n"
            f"{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}"
        ).encode()

    @staticmethod
    def read_until(conn: socket.socket, wanted: bytes) -> bytes:
        data = b""
        deadline = time.monotonic() + 20
        while wanted not in data and time.monotonic() < deadline:
            chunk = conn.recv(65535)
            if not chunk:
                break
            data += chunk
        assert wanted in data, data
        return data

    def close(self) -> None:
        self.calling.close()
        self.listener.close()


def _to_tag(data: bytes) -> str:
    line = next(line for line in data.decode().split("\r\n") if line.startswith("To:"))
    return line.split("tag=")[1].split(";")[0]


def test_a_caller_whose_connection_dropped_while_ringing_hears_the_answer_anew_and_no_ack_ends_the_call(
    sip: CallgridServer, automation: CallAutomationClient, app: WebhookReceiver
) -> None:
    sip.own_number(OWNED)
    caller = _TcpCaller(sip)
    try:
        caller.calling.sendall(caller.request("INVITE", 1, body=_SDP))
        caller.read_until(caller.calling, b"180 Ringing")
        caller.calling.close()  # the SBC's connection drops while the call rings
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        # RFC 3261 18.2.2: the 200 comes down a new connection to the Via's port...
        again, _ = caller.listener.accept()
        with again:
            caller.read_until(again, b"SIP/2.0 200 OK")
            # ...and with no ACK over TCP either, the call ends (64 x T1) with a BYE to the caller.
            caller.read_until(again, b"BYE sip:")
        gone = app.wait_for(
            "Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        assert gone["data"]["callConnectionId"] == ccid
        assert sip.get_call(incoming["serverCallId"])["state"] == "disconnected"
    finally:
        caller.close()


def test_a_caller_whose_connection_dropped_mid_call_gets_the_apps_bye_on_a_new_one(
    sip: CallgridServer, automation: CallAutomationClient, app: WebhookReceiver
) -> None:
    sip.own_number(OWNED)
    caller = _TcpCaller(sip)
    try:
        caller.calling.sendall(caller.request("INVITE", 1, body=_SDP))
        caller.read_until(caller.calling, b"180 Ringing")
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        answer = caller.read_until(caller.calling, b"SIP/2.0 200 OK")
        to_tag = _to_tag(answer[answer.index(b"SIP/2.0 200 OK") :])
        caller.calling.sendall(caller.request("ACK", 1, to_tag=to_tag))
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        caller.calling.close()  # mid-call, the connection drops
        undeliverable, timeouts = sip_metric(sip, "bye_undeliverable"), sip_metric(sip, "bye_timeout")
        automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
        again, _ = caller.listener.accept()  # the BYE goes to the caller's Contact on a new connection
        with again:
            bye = caller.read_until(again, b"\r\n\r\n")
            assert bye.startswith(b"BYE sip:") and b"Call-ID: tcp-" in bye
        app.wait_for("Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid)
        assert sip.get_call(incoming["serverCallId"])["state"] == "disconnected"
        # That new connection closed without an answer: the BYE fails at once (RFC 3261 17.1.4), not after
        # Timer F (64 x T1, 6.4 s here).
        deadline = time.monotonic() + 3
        while sip_metric(sip, "bye_undeliverable") == undeliverable and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sip_metric(sip, "bye_undeliverable") == undeliverable + 1
        assert sip_metric(sip, "bye_timeout") == timeouts
    finally:
        caller.close()


def test_an_sbc_calling_in_over_tcp_is_answered_and_hangs_up(
    sip: CallgridServer, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    xml = scenario(
        "tcp-answered",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(300),
        in_dialog("BYE", 2),
        recv(200),
    )
    trace = _answered_tcp_caller(sip, automation, app, tmp_path, xml)
    assert "Via: SIP/2.0/TCP" in trace


def test_a_caller_over_tcp_is_told_to_send_its_requests_in_the_dialog_over_tcp(
    sip: CallgridServer, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    # RFC 3261 12.1.1: the Contact of our 180 and 200 is the remote target of the caller's BYE and
    # re-INVITEs; without transport=tcp a caller would send them over UDP.
    sip.own_number(OWNED)
    tcp_contact = "^ *.sip:[^;>]*;transport=tcp>$"  # (no "<" in SIPp's XML: "." for it)
    xml = scenario(
        "tcp-contact",
        invite(caller=CALLER),
        recv(100, optional=True),
        f'\n  <recv response="180"><action>{header_check("Contact", tcp_contact, "early")}</action></recv>',
        f'\n  <recv response="200" rrs="true"><action>{header_check("Contact", tcp_contact, "c")}</action></recv>',
        ack(),
        in_dialog("BYE", 2),
        recv(200),
    )
    trace = _answered_tcp_caller(sip, automation, app, tmp_path, xml)
    assert "BYE sip:callgrid@127.0.0.1:" in trace and ";transport=tcp SIP/2.0" in trace


def _answered_tcp_caller(
    sip: CallgridServer, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path, xml: str
) -> str:
    """Run `xml` as a caller over TCP whose call the app answers; once SIPp is done and the app has seen
    the call disconnected, SIPp's trace."""
    remote = f"127.0.0.1:{sip.sip_port}"  # type: ignore[attr-defined]
    uac = Sipp(tmp_path, "sbc-in", xml, remote=remote, service=OWNED, caller=CALLER, transport="t1").start()
    try:
        incoming = app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]
        ccid = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks").call_connection_id
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        app.wait_for("Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid)
    finally:
        uac.stop()
    return run.trace
