"""Our session descriptions' o= line (RFC 3264 8, RFC 4566 5.2): through one dialog the username, session
id and address stay; the version goes up by exactly one when the description changes and stays when the
same description goes again (a session refresh)."""

from __future__ import annotations

from callgrid.sip import sdp


def _origin(body: bytes) -> list[str]:
    line = next(line for line in body.decode().split("\r\n") if line.startswith("o="))
    return line[2:].split()


def test_one_dialogs_descriptions_keep_the_session_and_count_each_change() -> None:
    origin = sdp.Origin(session_id=4242)
    answer = sdp.build("127.0.0.1", 40000, sdp.PCMU, 101, origin=origin)
    again = sdp.build("127.0.0.1", 40000, sdp.PCMU, 101, origin=origin)  # a refresh: nothing changed
    held = sdp.build("127.0.0.1", 40000, sdp.PCMU, 101, origin=origin, direction="recvonly")
    offer = sdp.build_offer("127.0.0.1", 40000, origin=origin)  # a re-INVITE without SDP asks for ours
    offer_again = sdp.build_offer("127.0.0.1", 40000, origin=origin)
    resumed = sdp.build("127.0.0.1", 40000, sdp.PCMU, 101, origin=origin)
    origins = [_origin(body) for body in (answer, again, held, offer, offer_again, resumed)]
    assert [o[2] for o in origins] == ["1", "1", "2", "3", "3", "4"]
    assert {(o[0], o[1], o[3], o[4], o[5]) for o in origins} == {("callgrid", "4242", "IN", "IP4", "127.0.0.1")}
    assert again == answer and offer_again == offer


def test_each_dialog_has_its_own_session_id() -> None:
    first, second = sdp.Origin(), sdp.Origin()
    assert first.session_id != second.session_id
    one = _origin(sdp.build_offer("127.0.0.1", 40000, origin=first))
    other = _origin(sdp.build_offer("127.0.0.1", 40002, origin=second))
    assert one[1] != other[1] and one[2] == other[2] == "1"


def test_an_ipv6_address_is_described_as_such() -> None:
    body = sdp.build("::1", 40000, sdp.PCMA, None, origin=sdp.Origin(session_id=7)).decode()
    assert "o=callgrid 7 1 IN IP6 ::1\r\n" in body and "c=IN IP6 ::1\r\n" in body
