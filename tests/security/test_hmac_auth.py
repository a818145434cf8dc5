"""HMAC request signing, checked against requests signed by the real ACS SDKs."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import yarl
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.communication.callautomation.aio import CallAutomationClient as AsyncCallAutomationClient
from azure.communication.identity import CommunicationIdentityClient
from azure.communication.identity import CommunicationUserIdentifier as IdentityUser
from azure.communication.identity.aio import CommunicationIdentityClient as AsyncIdentityClient
from azure.communication.phonenumbers import PhoneNumbersClient
from azure.core.credentials import AzureKeyCredential
from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport

from callgrid.security.hmac_auth import (
    HmacAuthError,
    content_hash,
    format_http_date,
    new_access_key,
    sign_request,
    verify_request,
)

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

SKEW = timedelta(minutes=15)
ENDPOINT = "https://localhost:8443"
USER = "8:acs:11111111-2222-3333-4444-555555555555_00000014-2033-438d-1000-343a0d006e10"


class Captured(Exception):
    """Raised by the fake transports once the signed request is in hand (no response needed)."""


@dataclass
class Wire:
    method: str
    raw_target: str
    host: str
    headers: dict[str, str]
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)


def _to_wire(request: Any, *, aiohttp_like: bool = False) -> Wire:
    url = request.url
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    if aiohttp_like:
        # aiohttp sends the yarl-normalised target (%3A becomes ':'), not the string the SDK signed.
        target = yarl.URL(url).raw_path_qs
    body = request.body
    raw = b"" if body is None else body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return Wire(request.method, target, parts.netloc, dict(request.headers), raw)


class CaptureTransport(HttpTransport):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __enter__(self) -> CaptureTransport:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        raise Captured


class AsyncCaptureTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def __aenter__(self) -> AsyncCaptureTransport:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        raise Captured


def _verify(wire: Wire, key: str, *, now: datetime | None = None) -> None:
    verify_request(
        method=wire.method,
        raw_target=wire.raw_target,
        host=wire.host,
        headers=wire.headers,
        body=wire.body,
        access_key=key,
        now=now or datetime.now(UTC),
        max_skew=SKEW,
    )


def _capture(call: Any, transport: CaptureTransport) -> Wire:
    with pytest.raises(Captured):
        call()
    return _to_wire(transport.requests[-1])


@pytest.fixture
def key() -> str:
    return new_access_key()


# --- the real SDKs -------------------------------------------------------------------------------------


def test_sdk_identity_create_user_empty_body(key: str) -> None:
    transport = CaptureTransport()
    client = CommunicationIdentityClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    wire = _capture(client.create_user, transport)
    assert wire.raw_target.startswith("/identities?api-version=")
    assert wire.headers["x-ms-content-sha256"] == content_hash(b"")
    _verify(wire, key)


def test_sdk_identity_get_token_encoded_path(key: str) -> None:
    transport = CaptureTransport()
    client = CommunicationIdentityClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    wire = _capture(lambda: client.get_token(IdentityUser(USER), ["voip"]), transport)
    assert "/identities/8%3Aacs%3A" in wire.raw_target
    _verify(wire, key)


def test_sdk_callautomation_answer_with_json_body(key: str) -> None:
    transport = CaptureTransport()
    client = CallAutomationClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    wire = _capture(
        lambda: client.answer_call("ctx-token", "https://app.example/callbacks", operation_context="ctx"),
        transport,
    )
    assert wire.raw_target.startswith("/calling/callConnections:answer?")
    assert b'"incomingCallContext": "ctx-token"' in wire.body
    _verify(wire, key)


def test_sdk_callautomation_get_participant(key: str) -> None:
    transport = CaptureTransport()
    client = CallAutomationClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    connection = client.get_call_connection("401f3500-62bd-46a9-8c09-9e1b06caca01")
    wire = _capture(lambda: connection.get_participant(CommunicationUserIdentifier(USER)), transport)
    assert "/participants/8%3Aacs%3A" in wire.raw_target
    _verify(wire, key)


def test_sdk_phonenumbers_get_number(key: str) -> None:
    transport = CaptureTransport()
    client = PhoneNumbersClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    wire = _capture(lambda: client.get_purchased_phone_number("+14255550123"), transport)
    assert wire.raw_target.startswith("/phoneNumbers/%2B14255550123?")
    _verify(wire, key)


def test_sdk_trailing_slash_endpoint_signs_host_with_slash(key: str) -> None:
    transport = CaptureTransport()
    client = CallAutomationClient(ENDPOINT + "/", AzureKeyCredential(key), transport=transport)
    wire = _capture(
        lambda: client.answer_call("ctx-token", "https://app.example/callbacks"),
        transport,
    )
    assert wire.host == "localhost:8443"
    _verify(wire, key)


async def test_sdk_async_identity_signs_unquoted_path(key: str) -> None:
    transport = AsyncCaptureTransport()
    async with AsyncIdentityClient(ENDPOINT, AzureKeyCredential(key), transport=transport) as client:
        with pytest.raises(Captured):
            await client.get_token(IdentityUser(USER), ["chat"])
    for aiohttp_like in (False, True):
        wire = _to_wire(transport.requests[-1], aiohttp_like=aiohttp_like)
        _verify(wire, key)


async def test_sdk_async_callautomation_participant_path_decoded_on_wire(key: str) -> None:
    transport = AsyncCaptureTransport()
    async with AsyncCallAutomationClient(ENDPOINT, AzureKeyCredential(key), transport=transport) as client:
        connection = client.get_call_connection("401f3500-62bd-46a9-8c09-9e1b06caca01")
        with pytest.raises(Captured):
            await connection.get_participant(CommunicationUserIdentifier(USER))
    wire = _to_wire(transport.requests[-1], aiohttp_like=True)
    assert "/participants/8:acs:" in wire.raw_target
    _verify(wire, key)


def test_sdk_request_tampering_is_rejected(key: str) -> None:
    transport = CaptureTransport()
    client = CallAutomationClient(ENDPOINT, AzureKeyCredential(key), transport=transport)
    wire = _capture(lambda: client.answer_call("ctx-token", "https://app.example/callbacks"), transport)
    _verify(wire, key)

    with pytest.raises(HmacAuthError, match="content hash does not match the body"):
        _verify(replace(wire, body=wire.body.replace(b"ctx-token", b"ctx-tokeN")), key)

    forged_body = wire.body.replace(b"ctx-token", b"ctx-tokeN")
    rehashed = {**wire.headers, "x-ms-content-sha256": content_hash(forged_body)}
    with pytest.raises(HmacAuthError, match="signature does not match"):
        _verify(replace(wire, body=forged_body, headers=rehashed), key)

    with pytest.raises(HmacAuthError, match="signature does not match"):
        _verify(wire, new_access_key())

    shifted = format_http_date(datetime.now(UTC) - timedelta(seconds=30))
    if shifted != wire.headers["x-ms-date"]:
        with pytest.raises(HmacAuthError, match="signature does not match"):
            _verify(replace(wire, headers={**wire.headers, "x-ms-date": shifted}), key)

    with pytest.raises(HmacAuthError, match="signature does not match"):
        _verify(replace(wire, raw_target=wire.raw_target.replace(":answer", ":reject")), key)

    with pytest.raises(HmacAuthError, match="signature does not match"):
        _verify(replace(wire, method="PUT"), key)

    with pytest.raises(HmacAuthError, match="signature does not match"):
        _verify(replace(wire, host="localhost:9999"), key)

    with pytest.raises(HmacAuthError, match="older than 15 minutes"):
        _verify(wire, key, now=datetime.now(UTC) + timedelta(minutes=16))


# --- sign_request / verify_request on their own ---------------------------------------------------------

NOW = datetime(2026, 11, 23, 19, 37, 17, tzinfo=UTC)
HOST = "127.0.0.1:34205"


def _check(
    headers: dict[str, str],
    *,
    target: str = "/calling/callConnections:answer?api-version=2026-03-12",
    host: str = HOST,
    body: bytes = b"{}",
    key: str,
    now: datetime = NOW,
    method: str = "POST",
) -> None:
    verify_request(
        method=method,
        raw_target=target,
        host=host,
        headers=headers,
        body=body,
        access_key=key,
        now=now,
        max_skew=SKEW,
    )


def _signed(key: str, target: str = "/calling/callConnections:answer?api-version=2026-03-12") -> dict[str, str]:
    return sign_request("POST", target, HOST, b"{}", key, NOW)


def test_sign_request_headers_shape(key: str) -> None:
    headers = sign_request("post", "/identities?api-version=2023-10-01", HOST, b"", key, NOW)
    assert headers["x-ms-date"] == "Mon, 23 Nov 2026 19:37:17 GMT"
    assert headers["x-ms-content-sha256"] == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    prefix = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
    assert headers["Authorization"].startswith(prefix)
    assert len(base64.b64decode(headers["Authorization"][len(prefix) :], validate=True)) == 32
    _check(headers, target="/identities?api-version=2023-10-01", body=b"", key=key)


def test_sign_request_known_vector() -> None:
    # Recomputed independently of the module: HMAC over the documented string-to-sign.
    import hashlib
    import hmac

    key = base64.b64encode(b"k" * 64).decode()
    date = "Mon, 23 Nov 2026 19:37:17 GMT"
    body_hash = content_hash(b'{"a": 1}')
    to_sign = f"POST\n/x?api-version=1\n{date};{HOST};{body_hash}".encode()
    expected = base64.b64encode(hmac.new(b"k" * 64, to_sign, hashlib.sha256).digest()).decode()
    headers = sign_request("POST", "/x?api-version=1", HOST, b'{"a": 1}', key, NOW)
    assert headers["Authorization"].endswith("&Signature=" + expected)


def test_http_date_is_english_rfc1123() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for day in range(0, 400, 7):
        moment = start + timedelta(days=day, seconds=day * 37)
        assert format_http_date(moment) == format_datetime(moment, usegmt=True)
    naive = datetime(2026, 11, 23, 19, 37, 17)
    assert format_http_date(naive) == "Mon, 23 Nov 2026 19:37:17 GMT"
    offset = datetime(2026, 11, 23, 20, 37, 17, tzinfo=timezone(timedelta(hours=1)))
    assert format_http_date(offset) == "Mon, 23 Nov 2026 19:37:17 GMT"


def test_unquoted_path_variant(key: str) -> None:
    # async Identity: signs unquote(path) but the wire keeps %3A
    wire_target = f"/identities/{USER.replace(':', '%3A')}/:issueAccessToken?api-version=2023-10-01"
    signed_target = f"/identities/{USER}/:issueAccessToken?api-version=2023-10-01"
    _check(_signed(key, signed_target), target=wire_target, key=key)


def test_participants_reencoding_variant(key: str) -> None:
    # async CallAutomation: signs %3A, aiohttp sends ':'
    encoded = "/calling/callConnections/abc/participants/8%3Aacs%3Ares_user?api-version=2026-03-12"
    decoded = "/calling/callConnections/abc/participants/8:acs:res_user?api-version=2026-03-12"
    _check(_signed(key, encoded), target=decoded, key=key)
    phone_signed = "/calling/callConnections/abc/participants/4%3A%2B14255550123?api-version=2026-03-12"
    phone_wire = "/calling/callConnections/abc/participants/4:%2B14255550123?api-version=2026-03-12"
    _check(_signed(key, phone_signed), target=phone_wire, key=key)


def test_reencoding_keeps_action_suffix(key: str) -> None:
    signed = "/calling/recordings/rec%3D%3D:pause?api-version=2026-03-12"
    wire = "/calling/recordings/rec==:pause?api-version=2026-03-12"
    _check(_signed(key, signed), target=wire, key=key)


def test_trailing_slash_host(key: str) -> None:
    headers = sign_request("POST", "/x", HOST + "/", b"{}", key, NOW)
    _check(headers, target="/x", key=key)


def test_default_port_host_variants(key: str) -> None:
    headers = sign_request("POST", "/x", "acs.example", b"{}", key, NOW)
    _check(headers, target="/x", host="acs.example:443", key=key)


def test_skew_both_directions(key: str) -> None:
    headers = _signed(key)
    _check(headers, key=key, now=NOW + SKEW)
    _check(headers, key=key, now=NOW - SKEW)
    with pytest.raises(HmacAuthError, match="request is older than 15 minutes"):
        _check(headers, key=key, now=NOW + SKEW + timedelta(seconds=1))
    with pytest.raises(HmacAuthError, match="in the future"):
        _check(headers, key=key, now=NOW - SKEW - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("dropped", "message"),
    [
        ("Authorization", "missing Authorization header"),
        ("x-ms-date", "missing x-ms-date header"),
        ("x-ms-content-sha256", "missing x-ms-content-sha256 header"),
    ],
)
def test_missing_headers(key: str, dropped: str, message: str) -> None:
    headers = {k: v for k, v in _signed(key).items() if k != dropped}
    with pytest.raises(HmacAuthError, match=message):
        _check(headers, key=key)


def test_missing_host(key: str) -> None:
    with pytest.raises(HmacAuthError, match="missing Host header"):
        _check(_signed(key), host="", key=key)


def test_bad_date(key: str) -> None:
    headers = {**_signed(key), "x-ms-date": "yesterday"}
    with pytest.raises(HmacAuthError, match="not an RFC 1123 date"):
        _check(headers, key=key)


def test_date_header_fallback(key: str) -> None:
    headers = _signed(key)
    headers["Date"] = headers.pop("x-ms-date")
    _check(headers, key=key)


def test_header_names_case_insensitive(key: str) -> None:
    upper = {k.upper(): v for k, v in _signed(key).items()}
    _check(upper, key=key)


def test_bearer_scheme_rejected(key: str) -> None:
    headers = {**_signed(key), "Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"}
    with pytest.raises(HmacAuthError, match="a bearer token is not an HMAC signature"):
        _check(headers, key=key)


def test_other_scheme_rejected(key: str) -> None:
    headers = {**_signed(key), "Authorization": "Basic dXNlcjpwYXNz"}
    with pytest.raises(HmacAuthError, match="unsupported authorization scheme 'Basic'"):
        _check(headers, key=key)


def test_authorization_spacing_and_order_tolerated(key: str) -> None:
    headers = _signed(key)
    signature = headers["Authorization"].split("Signature=", 1)[1]
    headers["Authorization"] = (
        f"hmac-sha256   Signature = {signature} & SignedHeaders = x-ms-date;host;x-ms-content-sha256"
    )
    _check(headers, key=key)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256", "has no Signature"),
        ("HMAC-SHA256 Signature=abc=", "has no SignedHeaders"),
        ("HMAC-SHA256 SignedHeaders=host&Signature=abc=", "SignedHeaders must be"),
        ("", "Authorization header is empty"),
    ],
)
def test_malformed_authorization(key: str, value: str, message: str) -> None:
    headers = {**_signed(key), "Authorization": value}
    with pytest.raises(HmacAuthError, match=message):
        _check(headers, key=key)


def test_wrong_signature(key: str) -> None:
    headers = _signed(key)
    with pytest.raises(HmacAuthError, match="signature does not match"):
        _check(headers, key=new_access_key())
    with pytest.raises(HmacAuthError, match="signature does not match"):
        _check(headers, target="/calling/callConnections:answer?api-version=2026-03-13", key=key)


def test_new_access_key() -> None:
    keys = {new_access_key() for _ in range(20)}
    assert len(keys) == 20
    for k in keys:
        assert len(base64.b64decode(k, validate=True)) == 64
        assert len(k) == 88 and k.endswith("=")
