"""RFC 4028's headers and decisions without sockets: Session-Expires and Min-SE as peers write them, what a
UAS answers to a request, what a UAC takes from a 2xx, and the deadlines on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from callgrid.clock import VirtualClock
from callgrid.sip.message import Request, Response, SipParseError, parse
from callgrid.sip.session_timer import (
    Deadlines,
    Session,
    SessionExpires,
    TooSmall,
    answer_of_response,
    answer_request,
    expiry_margin,
    parse_min_se,
    parse_session_expires,
    session_expires_of,
    supports_timer,
)


def _request(*headers: str) -> Request:
    head = [
        "INVITE sip:+14255551212@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        "From: <sip:+12065550100@10.0.0.1>;tag=a",
        "To: <sip:+14255551212@127.0.0.1>",
        "Call-ID: c1",
        "CSeq: 1 INVITE",
        *headers,
    ]
    message = parse(("\r\n".join(head) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", SessionExpires(1800, None)),
        ("1800;refresher=uac", SessionExpires(1800, "uac")),
        ("  90 ; refresher = UAS ", SessionExpires(90, "uas")),
        ("4000;x=1;refresher=uas", SessionExpires(4000, "uas")),
        ("4000;refresher=proxy", SessionExpires(4000, None)),  # not a refresher: as if unsaid
    ],
)
def test_session_expires_parses_as_peers_write_it(value: str, expected: SessionExpires) -> None:
    assert parse_session_expires(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "1.5;refresher=uac", "99999999999", ";refresher=uac"])
def test_a_session_expires_that_is_not_delta_seconds_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_session_expires(value)


def test_min_se_parses_with_its_generic_parameters_ignored() -> None:
    assert parse_min_se("90") == 90
    assert parse_min_se(" 120;lr") == 120
    with pytest.raises(SipParseError):
        parse_min_se("ninety")


def test_the_compact_form_and_option_tags_in_any_case_are_understood() -> None:
    request = _request("x: 600;refresher=uac", "k: 100rel, TIMER")
    assert session_expires_of(request) == SessionExpires(600, "uac")
    assert supports_timer(request)
    assert supports_timer(_request("Require: timer"))
    assert not supports_timer(_request("Supported: 100rel, replaces"))
    assert session_expires_of(_request("Session-Expires: soon")) is None  # unreadable: as absent


def test_a_uas_answers_what_the_request_asks_within_its_limits() -> None:
    limits = {"min_se": 90, "default": 1800}
    # The caller supports timers and says who refreshes: as asked.
    assert answer_request(_request("Supported: timer", "Session-Expires: 600;refresher=uas"), **limits) == Session(
        600, "uas"
    )
    # ... without saying who: the caller.
    assert answer_request(_request("Supported: timer", "Session-Expires: 600"), **limits) == Session(600, "uac")
    # ... without an interval: ours, refreshed by the caller.
    assert answer_request(_request("Supported: timer"), **limits) == Session(1800, "uac")
    # Too long an interval is shortened to ours, never below the request's Min-SE.
    assert answer_request(_request("Supported: timer", "Session-Expires: 7200"), **limits) == Session(1800, "uac")
    assert answer_request(_request("Supported: timer", "Session-Expires: 7200", "Min-SE: 3600"), **limits) == Session(
        3600, "uac"
    )
    # Too short: 422 with our Min-SE.
    assert answer_request(_request("Supported: timer", "Session-Expires: 30"), **limits) == TooSmall(90)


def test_a_peer_without_the_extension_gets_no_session_timer_unless_a_proxy_asked() -> None:
    limits = {"min_se": 90, "default": 1800}
    assert answer_request(_request(), **limits) is None
    # A proxy added Session-Expires for a caller that cannot refresh or retry: we refresh, and no 422.
    assert answer_request(_request("Session-Expires: 600;refresher=uac"), **limits) == Session(600, "uas")
    assert answer_request(_request("Session-Expires: 30"), **limits) == Session(90, "uas")
    # Session timers off: none, whatever is asked.
    assert answer_request(_request("Supported: timer", "Session-Expires: 30"), min_se=90, default=0) is None


def test_a_uac_takes_the_interval_and_refresher_from_the_2xx() -> None:
    def ok(*headers: str) -> Response:
        response = Response(status=200)
        for header in headers:
            name, _, value = header.partition(":")
            response.add(name, value.strip())
        return response

    assert answer_of_response(ok("Session-Expires: 1200;refresher=uas"), min_se=90) == Session(1200, "uas")
    assert answer_of_response(ok("Session-Expires: 1200"), min_se=90) == Session(1200, "uac")
    assert answer_of_response(ok("Session-Expires: 10;refresher=uac"), min_se=90) == Session(90, "uac")
    assert answer_of_response(ok("Supported: timer"), min_se=90) is None


def test_the_side_that_does_not_refresh_gives_up_before_expiry_by_rfc_4028s_margin() -> None:
    assert expiry_margin(90) == 30
    assert expiry_margin(1800) == 32


async def test_deadlines_fire_in_order_on_the_virtual_clock_and_a_moved_or_cancelled_key_does_not() -> None:
    clock = VirtualClock(start=1000.0)
    fired: list[tuple[str, float]] = []
    counted: list[str] = []
    deadlines: Deadlines[str] = Deadlines(clock, lambda key: fired.append((key, clock.now())), count=counted.append)
    runner = asyncio.ensure_future(deadlines.run())
    try:
        deadlines.set("a", 1060.0)
        deadlines.set("b", 1045.0)
        deadlines.set("c", 1010.0)
        deadlines.cancel("c")
        deadlines.set("b", 1050.0)  # moved: 1045 no longer counts
        assert deadlines.next_due() == 1050.0
        assert len(deadlines) == 2
        await clock.set(1049.0)
        assert fired == []
        await clock.set(1050.0)
        await asyncio.sleep(0)
        assert fired == [("b", 1050.0)]
        await clock.set(1100.0)
        await asyncio.sleep(0)
        assert fired == [("b", 1050.0), ("a", 1100.0)]
        assert deadlines.next_due() is None and counted == []
    finally:
        runner.cancel()
