"""HMAC-SHA256 request signing as done by the Azure Communication Services SDKs.

String to sign: ``VERB\\nPATH?QUERY\\n<x-ms-date>;<host>;<x-ms-content-sha256>``, keyed with the
base64-decoded access key. The SDKs are not consistent about which form of the path they sign (see
acs-wire.md 1.3), so verification tries every form a genuine SDK can produce.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

__all__ = [
    "HmacAuthError",
    "SignedRequest",
    "check_headers",
    "content_hash",
    "format_http_date",
    "new_access_key",
    "sign_request",
    "verify_request",
    "verify_signature",
]

SCHEME = "HMAC-SHA256"
SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
_SHA256_B64 = re.compile(r"^[A-Za-z0-9+/]{43}=\Z")

# Segments whose *next* path segment is an identifier (a raw id, phone number, ...) that the SDK
# percent-encodes before signing but that aiohttp/yarl may decode on the wire.
_ID_PARENT_SEGMENTS = frozenset({"participants", "identities", "phonenumbers", "recordings", "callconnections"})

# strftime's %a/%b follow the process locale; the SDK (normally) produces English names.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HmacAuthError(Exception):
    """The request is not correctly signed; the message says why in plain words."""


def content_hash(body: bytes) -> str:
    """base64(SHA-256(body)), the value of ``x-ms-content-sha256``."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def format_http_date(date: datetime) -> str:
    """RFC 1123 date in GMT with English day/month names (naive datetimes are taken as UTC)."""
    utc = date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)
    return (
        f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year:04d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


@functools.lru_cache(maxsize=1024)
def _decode_key(access_key: str) -> bytes:
    # Cached: a request of the n-th resource is checked against the n keys before its own.
    try:
        # Same lenient decoding as the SDK, so any key the SDK can sign with works here too.
        return base64.b64decode(access_key)
    except binascii.Error as exc:
        raise ValueError("access key is not valid base64") from exc


def _signature(method: str, path_and_query: str, signed_values: str, key: bytes) -> bytes:
    string_to_sign = f"{method.upper()}\n{path_and_query}\n{signed_values}"
    return base64.b64encode(hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest())


def sign_request(
    method: str, path_and_query: str, host: str, body: bytes, access_key: str, date: datetime
) -> dict[str, str]:
    """Return the headers the SDK's HMAC policy would add to this request."""
    x_ms_date = format_http_date(date)
    body_hash = content_hash(body)
    sig = _signature(method, path_and_query, f"{x_ms_date};{host};{body_hash}", _decode_key(access_key))
    return {
        "x-ms-date": x_ms_date,
        "x-ms-content-sha256": body_hash,
        "Authorization": f"{SCHEME} SignedHeaders={SIGNED_HEADERS}&Signature={sig.decode('ascii')}",
    }


def new_access_key() -> str:
    """A fresh access key: 64 random bytes, standard base64 with padding (the SDK b64decodes it)."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def _parse_authorization(value: str) -> tuple[list[str], str]:
    """Split ``HMAC-SHA256 SignedHeaders=...&Signature=...`` into (signed header names, signature)."""
    scheme, _, params = value.strip().partition(" ")
    if not scheme:
        raise HmacAuthError("the Authorization header is empty")
    if scheme.lower() == "bearer":
        # Servers take bearer tokens before the HMAC check (api/auth.py); a bare verifier cannot.
        raise HmacAuthError("a bearer token is not an HMAC signature; sign the request with the access key")
    if scheme.upper() != SCHEME:
        raise HmacAuthError(f"unsupported authorization scheme {scheme!r}; expected {SCHEME}")
    fields: dict[str, str] = {}
    # Order and spacing vary between hand-written clients; '&' is the documented separator, ',' is tolerated.
    for part in params.replace(",", "&").split("&"):
        name, sep, val = part.partition("=")
        if sep:
            fields[name.strip().lower()] = val.strip()
    signature = fields.get("signature")
    if not signature:
        raise HmacAuthError("the Authorization header has no Signature")
    signed = fields.get("signedheaders")
    if not signed:
        raise HmacAuthError("the Authorization header has no SignedHeaders")
    names = [n.strip().lower() for n in signed.split(";") if n.strip()]
    # Only the SDK's three headers can be checked; "date" may stand in for "x-ms-date".
    if sorted(n if n != "date" else "x-ms-date" for n in names) != sorted(SIGNED_HEADERS.split(";")):
        raise HmacAuthError(f"SignedHeaders must be {SIGNED_HEADERS}, got {signed!r}")
    return names, signature


def _path_candidates(raw_target: str) -> Iterator[str]:
    yield raw_target
    # The async Identity client signs the unquoted path.
    yield unquote(raw_target)
    # The async CallAutomation client signs /participants/8%3Aacs%3A... but aiohttp sends 8:acs:...
    path, qmark, query = raw_target.partition("?")
    for keep_action in (False, True):
        segments = path.split("/")
        for i in range(1, len(segments)):
            if segments[i - 1].lower() in _ID_PARENT_SEGMENTS and segments[i]:
                segments[i] = _reencode_id_segment(segments[i], keep_action=keep_action)
        yield "/".join(segments) + qmark + query


def _reencode_id_segment(segment: str, *, keep_action: bool) -> str:
    decoded = unquote(segment)
    if keep_action:
        # "{callConnectionId}:terminate": the ":action" suffix comes from the URL template, unencoded.
        head, sep, action = decoded.rpartition(":")
        if sep and head and action.isalpha():
            return quote(head, safe="") + ":" + action
    return quote(decoded, safe="")


def _host_candidates(host: str) -> Iterator[str]:
    yield host
    # The SDK signs a trailing slash when the endpoint was given as "https://host:port/".
    yield host + "/"
    for default_port in (":443", ":80"):
        if host.endswith(default_port):
            yield host.removesuffix(default_port)
            yield host.removesuffix(default_port) + "/"


def x_ms_host_candidates(x_ms_host: str | None, host: str) -> tuple[str, ...]:
    """The hosts a request carrying `x-ms-host` may be signed for. The SDK downloads and deletes recordings
    at the chunk's location, a host other than the resource's, and signs them for its endpoint's host,
    naming that host (without its port) in x-ms-host; the port is taken to be the request's own."""
    if not x_ms_host:
        return ()
    _, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        return (f"{x_ms_host}:{port}", x_ms_host)
    return (x_ms_host,)


def _describe(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} minutes" if minutes != 1 else "1 minute"


@dataclass(frozen=True)
class SignedRequest:
    """What the headers of a request say about its signature, checked for presence, shape and freshness."""

    signed_names: list[str]
    signature: str
    date_value: str
    body_hash: str


@functools.lru_cache(maxsize=64)
def _sent_at(date_value: str) -> datetime:
    # Requests sent within the same second carry the same date: parse it once (email.utils is slow).
    return parsedate_to_datetime(date_value)


def check_headers(headers: Mapping[str, str], *, now: datetime, max_skew: timedelta) -> SignedRequest:
    """Everything that can be checked before the body is read; raise :class:`HmacAuthError` if it fails.

    A server calls this first, so an unsigned or stale request is refused before its body costs anything.
    """
    lowered = {k.lower(): v for k, v in headers.items()}

    authorization = lowered.get("authorization")
    if authorization is None:
        raise HmacAuthError("missing Authorization header")
    signed_names, given_signature = _parse_authorization(authorization)

    # The SDK never sends Date, but hand-written clients following the REST docs sometimes do.
    date_header = "x-ms-date" if "x-ms-date" in lowered else "date"
    date_value = lowered.get(date_header)
    if date_value is None:
        raise HmacAuthError("missing x-ms-date header")
    try:
        sent_at = _sent_at(date_value)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:  # Overflow: a year past 9999
        raise HmacAuthError(f"the {date_header} header is not an RFC 1123 date: {date_value!r}") from exc
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    current = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    if current - sent_at > max_skew:
        raise HmacAuthError(f"request is older than {_describe(max_skew)} (check the clock)")
    if sent_at - current > max_skew:
        raise HmacAuthError(f"request date is more than {_describe(max_skew)} in the future (check the clock)")

    body_hash = lowered.get("x-ms-content-sha256")
    if body_hash is None:
        raise HmacAuthError("missing x-ms-content-sha256 header")
    if not _SHA256_B64.match(body_hash.strip()):
        raise HmacAuthError("x-ms-content-sha256 is not a base64 SHA-256 digest")
    return SignedRequest(signed_names, given_signature, date_value, body_hash)


def verify_signature(
    signed: SignedRequest, *, method: str, raw_target: str, host: str, body_digest: bytes, access_key: str
) -> None:
    """Check the body's SHA-256 (`body_digest`, computed while it streamed in) and the signature."""
    verify_signature_with_any(
        signed, method=method, raw_target=raw_target, host=host, body_digest=body_digest, access_keys=[access_key]
    )


def verify_signature_with_any(
    signed: SignedRequest,
    *,
    method: str,
    raw_target: str,
    host: str,
    body_digest: bytes,
    access_keys: Sequence[str],
    signed_for: Sequence[str] = (),
) -> int:
    """`verify_signature` for a request that may be signed with any of `access_keys` (one server, several
    resources): returns the index of the key that verifies it. The request as received is tried with every
    key before the spellings some SDKs sign instead, so the usual request costs one HMAC per key.

    `signed_for`: other hosts the signature may name than the Host header's (see `x_ms_host_candidates`)."""
    actual = base64.b64encode(body_digest)
    if not hmac.compare_digest(signed.body_hash.strip().encode("utf-8"), actual):
        raise HmacAuthError("content hash does not match the body")

    if not host:
        raise HmacAuthError("missing Host header")

    keys = [_decode_key(k) for k in access_keys]
    given = signed.signature.encode("utf-8")
    seen: set[tuple[str, str]] = set()
    hosts = [h for name in (host, *signed_for) for h in _host_candidates(name)]
    for path in _path_candidates(raw_target):
        for host_value in hosts:
            if (path, host_value) in seen:
                continue
            seen.add((path, host_value))
            values = {"host": host_value, "x-ms-content-sha256": signed.body_hash}
            signed_values = ";".join(values.get(name, signed.date_value) for name in signed.signed_names)
            for index, key in enumerate(keys):
                if hmac.compare_digest(_signature(method, path, signed_values, key), given):
                    return index
    raise HmacAuthError("signature does not match")


def verify_request(
    *,
    method: str,
    raw_target: str,
    host: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    now: datetime,
    max_skew: timedelta,
) -> None:
    """Check an incoming request's HMAC signature; raise :class:`HmacAuthError` if it is not valid.

    ``raw_target`` is the request-target exactly as received (path and query, still percent-encoded);
    ``host`` is the Host header value. Header names in ``headers`` are matched case-insensitively.
    """
    signed = check_headers(headers, now=now, max_skew=max_skew)
    verify_signature(
        signed,
        method=method,
        raw_target=raw_target,
        host=host,
        body_digest=hashlib.sha256(body).digest(),
        access_key=access_key,
    )
