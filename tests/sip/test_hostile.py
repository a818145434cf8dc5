"""Bad input over real sockets: malformed, truncated and oversized SIP, out-of-dialog requests, unknown
methods and retransmission storms get the right SIP answer or a drop, are counted in /metrics, and
leave no call behind; TCP carries the same dialogs as UDP."""

from __future__ import annotations

import socket
import time

from callgrid.sip.message import Response, SipParseError, parse
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.conftest import sip_metric

NUMBER = "+14255551212"


def _request(method: str, *, call_id: str, branch: str, to_tag: str = "", port: int = 5999, body: str = "") -> bytes:
    to = f"<sip:{NUMBER}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:+12065550100@127.0.0.1>;tag=caller1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


class Udp:
    def __init__(self, server: CallgridServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", server.sip_port)  # type: ignore[attr-defined]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def answers(self, wait: float = 1.5) -> list[Response]:
        out: list[Response] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            try:
                msg = parse(data)
            except SipParseError:
                # A 400 to a request with an unreadable CSeq copies that CSeq: keep its status line.
                first = data.split(b"\r\n", 1)[0].decode()
                msg = Response(status=int(first.split()[1]), reason=first)
            assert isinstance(msg, Response)
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


def test_options_is_answered_and_unknown_or_out_of_dialog_requests_are_refused(sip: CallgridServer) -> None:
    udp = Udp(sip)
    before = sip_metric(sip, "out_of_dialog")
    try:
        udp.send(_request("OPTIONS", call_id="o1", branch="o1", port=udp.port))
        options = udp.answers(1.0)
        assert [r.status for r in options] == [200]
        assert "INVITE" in (options[0].get("Allow") or "")
        udp.send(_request("BYE", call_id="nobody", branch="b1", to_tag="nope", port=udp.port))
        assert [r.status for r in udp.answers(1.0)] == [481]
        udp.send(_request("FROB", call_id="f1", branch="f1", port=udp.port))
        assert [r.status for r in udp.answers(1.0)] == [501]
        # Without a To tag as well, and a CANCEL of no INVITE: 481, each counted.
        udp.send(_request("BYE", call_id="nobody2", branch="b2", port=udp.port))
        assert [r.status for r in udp.answers(1.0)] == [481]
        udp.send(_request("CANCEL", call_id="nobody3", branch="c3", port=udp.port))
        assert [r.status for r in udp.answers(1.0)] == [481]
        assert sip_metric(sip, "out_of_dialog") == before + 3
    finally:
        udp.close()


def test_malformed_sip_is_answered_400_when_it_can_be_and_dropped_otherwise(sip: CallgridServer) -> None:
    before = sip_metric(sip, "malformed")
    udp = Udp(sip)
    try:
        broken = _request("INVITE", call_id="m1", branch="m1", port=udp.port).replace(
            b"CSeq: 1 INVITE", b"CSeq: x INVITE"
        )
        udp.send(broken)
        answers = udp.answers(1.0)
        assert [r.status for r in answers] == [400]
        for garbage in (b"\x00\xff" * 50, b"hello", b"INVITE sip:x SIP/2.0\r\nVia: nope\r\n", b"X" * 9000):
            udp.send(garbage)
        assert udp.answers(1.0) == []
        assert sip_metric(sip, "malformed") == before + 5
    finally:
        udp.close()


def test_a_retransmission_storm_makes_one_call(sip: CallgridServer, app: WebhookReceiver) -> None:
    sip.own_number(NUMBER)
    udp = Udp(sip)
    before = sip_metric(sip, "retransmissions_received")
    try:
        invite = _request("INVITE", call_id="storm", branch="storm", port=udp.port, body=SDP)
        for _ in range(30):
            udp.send(invite)
        answers = udp.answers(2.0)
        assert {r.status for r in answers} <= {100, 180}
        app.wait_for("Microsoft.Communication.IncomingCall")
        time.sleep(0.5)
        assert len(app.events("Microsoft.Communication.IncomingCall")) == 1
        assert sip_metric(sip, "retransmissions_received") >= before + 25
        # The caller gives up: CANCEL ends the one call, which the INVITE's 487 confirms.
        cancel = invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        cancel = cancel.split(b"Content-Type:")[0] + b"Content-Length: 0\r\n\r\n"
        udp.send(cancel)
        statuses = [r.status for r in udp.answers(1.5)]
        assert 200 in statuses and 487 in statuses
    finally:
        udp.close()


def test_a_call_over_tcp_rings_and_is_cancelled(sip: CallgridServer, app: WebhookReceiver) -> None:
    sip.own_number(NUMBER)
    with socket.create_connection(("127.0.0.1", sip.sip_port), timeout=5) as tcp:  # type: ignore[attr-defined]
        invite = _request("INVITE", call_id="tcp1", branch="tcp1", body=SDP).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        tcp.sendall(invite)
        data = b""
        deadline = time.monotonic() + 10
        while b"180 Ringing" not in data and time.monotonic() < deadline:
            data += tcp.recv(65535)
        assert b"SIP/2.0 180 Ringing" in data  # a 100 Trying first only when ringing took over 200 ms
        incoming = app.wait_for("Microsoft.Communication.IncomingCall")["data"]
        cancel = invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        tcp.sendall(cancel.split(b"Content-Type:")[0] + b"Content-Length: 0\r\n\r\n")
        while b"487 Request Terminated" not in data and time.monotonic() < deadline:
            data += tcp.recv(65535)
        assert b"487 Request Terminated" in data
    assert sip.get_call(incoming["serverCallId"])["state"] == "disconnected"


def test_an_oversized_tcp_message_closes_the_connection(sip: CallgridServer) -> None:
    with socket.create_connection(("127.0.0.1", sip.sip_port), timeout=5) as tcp:  # type: ignore[attr-defined]
        tcp.sendall(b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n")
        tcp.settimeout(5)
        try:
            rest = tcp.recv(100)
        except ConnectionResetError:
            rest = b""
        assert rest == b""  # closed by callgrid, not waiting for more
