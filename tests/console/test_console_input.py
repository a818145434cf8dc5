"""Bad input to the console's actions gets ACS's error body with a 4xx status: never a 500."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import pytest
import requests

from callgrid.testing import CallgridServer

ACTIONS = [
    "/console/actions/calls",
    "/console/actions/calls/nope/device",
    "/console/actions/calls/nope/hangUp",
    "/console/actions/calls/nope/dtmf",
    "/console/actions/numbers",
    "/console/actions/numbers/%2B1800/release",
    "/console/actions/subscriptions",
    "/console/actions/subscriptions/delete",
    "/console/actions/deadLetters/nope/replay",
    "/console/actions/clock",
    "/console/softphone/calls",
    "/console/softphone/nope/dtmf",
    "/console/softphone/nope/hangUp",
]
BODIES: list[Any] = [
    b"",
    b"{",
    b"[]",
    b'"text"',
    b'{"from": 5, "to": [], "sdp": 1}',
    b'{"from": "+1425", "to": "+1", "tones": "xyz", "action": "dance", "seconds": -1}',
    b'{"from": "8:acs:nobody", "to": "+18005551212", "sdp": "v=0 garbage", "phoneNumber": "123"}',
    b'{"name": "x", "endpointUrl": "ftp://nowhere", "advancedFilters": "[1,2", "maxDeliveryAttempts": "9e9"}',
    b'{"seconds": "1e400", "id": "", "participant": "4:+1", "tones": "1"}',
    b"\xff\xfe",
]


@pytest.fixture
def session(callgrid: CallgridServer) -> requests.Session:
    session = requests.Session()
    session.verify = callgrid.ca_bundle
    session.headers["X-Callgrid-Console"] = "1"
    login = session.post(
        callgrid.endpoint + "/console/login",
        data={"token": callgrid.env["CALLGRID_CONSOLE_TOKEN"]},
        allow_redirects=False,
    )
    assert login.status_code == 303
    return session


@pytest.mark.parametrize("path", ACTIONS)
def test_bad_bodies_are_refused_with_a_reason(session: requests.Session, callgrid: CallgridServer, path: str) -> None:
    for body in BODIES:
        answer = session.post(callgrid.endpoint + path, data=body, headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (path, body, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert error["code"] and error["message"], (path, body)


def test_a_huge_body_is_refused(session: requests.Session, callgrid: CallgridServer) -> None:
    answer = session.post(callgrid.endpoint + "/console/softphone/calls", data=b"{" + b" " * 2_000_000 + b"}")
    assert answer.status_code == 413


def test_unknown_panels_and_pages(session: requests.Session, callgrid: CallgridServer) -> None:
    assert session.get(callgrid.endpoint + "/console/panels/nope").status_code == 404
    assert session.get(callgrid.endpoint + "/console/nope").status_code == 404


def test_the_page_needs_nothing_from_the_network(session: requests.Session, callgrid: CallgridServer) -> None:
    """Works offline: every script, style and link is the console's own (no CDN)."""
    html = session.get(callgrid.endpoint + "/console/").text
    references = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert references and all(r.startswith(("/console/", "#")) for r in references), references
    for asset in ("console.js", "console.css"):
        served = session.get(callgrid.endpoint + "/console/static/" + asset)
        assert served.status_code == 200
        assert served.text == (files("callgrid.console") / "static" / asset).read_text()
        assert not re.search(r"https?://", served.text), asset
