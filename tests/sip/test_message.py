"""The SIP parser: what real peers send parses, what they must not send is refused with SipParseError,
and nothing else ever escapes (a hypothesis run over arbitrary and mutated messages)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callgrid.sip import sdp
from callgrid.sip.message import Request, Response, SipParseError, parse, parse_name_addr, phone_number, response_to

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

INVITE = (
    b"INVITE sip:+14255551212@127.0.0.1:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Pat, Caller" <sip:+12065550100@sbc.example.com>;tag=1928301774\r\n'
    b"To: <sip:+14255551212@callgrid>\r\n"
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"X-MS-Custom-Ticket: 42\r\n"
    b"Subject: folded\r\n  across lines\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nextra"
)


def test_a_real_invite_parses_with_compact_forms_folding_and_custom_headers() -> None:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:+14255551212@127.0.0.1:5060;user=phone")
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq == (314159, "INVITE")
    assert [v.split(";")[0] for v in msg.get_all("via")] == ["SIP/2.0/UDP 10.0.0.1:5060", "SIP/2.0/UDP 10.0.0.2"]
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.get("subject") == "folded across lines"
    assert msg.body == b"v=0\r"  # Content-Length wins over what follows
    assert ("X-MS-Custom-Ticket", "42") in msg.headers  # custom names keep their spelling
    sender = parse_name_addr(msg.get("From") or "")
    assert (sender.display, sender.tag) == ("Pat, Caller", "1928301774")
    assert phone_number(sender.uri) == "+12065550100"
    assert phone_number("sip:alice@example.com") is None
    assert phone_number("tel:+1-425-555-0100") == "+14255550100"


def test_a_response_copies_what_rfc_3261_asks_and_adds_the_to_tag() -> None:
    request = parse(INVITE)
    assert isinstance(request, Request)
    response = response_to(request, 180, to_tag="abc")
    again = parse(response.encode())
    assert isinstance(again, Response)
    assert (again.status, again.reason) == (180, "Ringing")
    assert again.get_all("Via") == request.get_all("Via")
    assert parse_name_addr(again.get("To") or "").tag == "abc"
    assert again.cseq == (314159, "INVITE")


@pytest.mark.parametrize(
    "broken",
    [
        b"",
        b"INVITE sip:x SIP/2.0\r\n",  # no end of headers
        b"INVITE  sip:x SIP/2.0\r\n\r\n",
        b"INVITE http://x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n",
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"),
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 99999999999 INVITE"),
        INVITE.replace(b"l: 4", b"l: 400"),  # truncated body
        INVITE.replace(b"l: 4", b"l: -1"),
        INVITE.replace(b"i: a84b4c76e66710@pc33.example.com\r\n", b""),  # no Call-ID
        INVITE.replace(b"SIP/2.0/UDP 10.0.0.1:5060", b"SIP/2.0/UDP 10.0.0.1:99999"),
        INVITE.replace(b"<sip:+14255551212@callgrid>", b"<sip:+14255551212@callgrid"),
        INVITE.replace(b"Max-Forwards: 70", b"Max Forwards: 70"),
        b"SIP/2.0 999 Nope\r\n\r\n",
        INVITE.replace(b"Pat", b"\xff\xfe"),
        b"INVITE sip:x SIP/2.0\r\n" + b"X-A: b\r\n" * 300 + b"\r\n",
        b"INVITE sip:x SIP/2.0\r\n" + b"X" * 70000 + b"\r\n\r\n",
    ],
)
def test_broken_messages_are_refused_with_a_parse_error(broken: bytes) -> None:
    with pytest.raises(SipParseError):
        parse(broken)


_PARTS = [
    INVITE,
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
    b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_PARTS)))
    for _ in range(draw(st.integers(0, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif action == "insert":
            data[at:at] = draw(
                st.sampled_from([b":", b"<", b">", b";", b"\r\n", b" ", b'"', b"\x00", b"SIP/2.0", b"=", b"@"])
            )
        elif action == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 60))]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400), _mutated()))
@example(b"SIP/2.0 100\nVia:SIP/2.0/A\t\x00\nFrom:sip:\x00\nT:sip:\x00\nCall-ID:\nCSeq:0\tA\n\n")  # empty Call-ID
def test_no_exception_but_a_parse_error_escapes_the_parser(data: bytes) -> None:
    try:
        msg = parse(data)
    except SipParseError:
        return
    # What parses can be used: its identity fields read and it encodes back to something that parses.
    assert msg.call_id
    msg.cseq  # noqa: B018
    msg.top_via  # noqa: B018
    parse(msg.encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_no_exception_but_an_sdp_error_escapes_the_sdp_reader(data: bytes) -> None:
    try:
        offer = sdp.parse(data)
    except sdp.SdpError:
        return
    offer.codec()


def test_an_offer_gives_the_first_g711_codec_and_the_event_payload() -> None:
    offer = sdp.parse(
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n"
    )
    assert (offer.host, offer.port, offer.codec(), offer.event_payload, offer.direction) == (
        "10.0.0.9",
        4000,
        8,
        96,
        "sendonly",
    )
    assert sdp.answer_direction(offer.direction) == "recvonly"
    with pytest.raises(sdp.SdpError):
        sdp.parse(b"v=0\r\nm=video 4000 RTP/AVP 96\r\n")
