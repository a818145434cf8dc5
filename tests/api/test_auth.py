"""Request authentication on a real server: HMAC on ACS and callgrid routes, bearer tokens on ARM routes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError

from callgrid.security import sign_request
from callgrid.testing import CallgridServer
from tests.support.arm import subscription_url

PATH = "/callgrid/v1/phoneNumbers"


def _post(server: CallgridServer, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(server.endpoint + PATH, data=body, headers={**headers, "Content-Type": "application/json"})


def _signed(
    server: CallgridServer, body: bytes, *, key: str | None = None, date: datetime | None = None
) -> dict[str, str]:
    host = f"localhost:{server.port}"
    return sign_request("POST", PATH, host, body, key or server.access_key, date or datetime.now(UTC))


def _assert_denied(response: requests.Response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "Denied"
    assert fragment in error["message"]


@pytest.fixture
def body() -> bytes:
    return json.dumps({"phoneNumber": "+14255550777"}).encode()


def test_correctly_signed_request_is_accepted(fresh: CallgridServer, body: bytes) -> None:
    assert _post(fresh, body, _signed(fresh, body)).status_code == 201


def test_unsigned_request_is_denied(fresh: CallgridServer, body: bytes) -> None:
    _assert_denied(_post(fresh, body, {}), "Authorization")


def test_wrong_key_is_denied(fresh: CallgridServer, body: bytes) -> None:
    other_key = base64.b64encode(b"not the resource's key" * 3).decode()
    _assert_denied(_post(fresh, body, _signed(fresh, body, key=other_key)), "signature")


def test_altered_body_is_denied(fresh: CallgridServer, body: bytes) -> None:
    headers = _signed(fresh, body)
    _assert_denied(_post(fresh, body.replace(b"0777", b"0778"), headers), "content hash")


def test_stale_and_future_dates_are_denied(fresh: CallgridServer, body: bytes) -> None:
    # Signatures are checked against real time (even when the simulation's clock is virtual).
    fresh.advance(3600)
    now = datetime.now(UTC)
    for skew in (timedelta(minutes=-20), timedelta(minutes=20)):
        _assert_denied(_post(fresh, body, _signed(fresh, body, date=now + skew)), "15 minutes")


def test_sdk_with_a_wrong_key_gets_client_authentication_error(fresh: CallgridServer) -> None:
    wrong = base64.b64encode(b"x" * 32).decode()
    client = CallAutomationClient(fresh.endpoint, AzureKeyCredential(wrong), retry_total=0)
    with pytest.raises(ClientAuthenticationError) as denied:
        client.reject_call("ctx")
    assert denied.value.status_code == 401


def test_arm_routes_need_callgrids_bearer_token(fresh: CallgridServer) -> None:
    url = subscription_url(fresh, "any")
    missing = requests.get(url)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "AuthenticationFailed"
    forged = requests.get(url, headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "InvalidAuthenticationToken"
    signed_hmac = requests.get(url, headers=_signed(fresh, b""))
    assert signed_hmac.status_code == 401
