"""The ``incomingCallContext`` of an IncomingCall event.

Shaped like the real service's value (an unsigned JWT whose payload is ``{"cc": <base64 gzip blob>}``,
acs-wire.md 4.2), but the blob carries an HMAC so a client cannot forge or alter one. Expiry and
single use are the caller's business.

Two of these are made and one read per routed call, so the JSON is orjson's (sorted keys for the MAC). A
context sealed by an earlier version (its MAC over the standard library's ASCII-escaped JSON) is still
honoured: on a mismatch that form is checked too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["InvalidCallContext", "decode_call_context", "encode_call_context", "new_secret"]

_HEADER = {"alg": "none", "typ": "JWT"}
_MAC_FIELD = "mac"
# Real contexts are a few kilobytes; anything far larger is not ours (and gunzip output is capped
# so a crafted blob cannot balloon in memory).
_MAX_TOKEN_CHARS = 64 * 1024
_MAX_INFLATED_BYTES = 256 * 1024

MALFORMED = "the incomingCallContext is malformed"
FOREIGN = "the incomingCallContext was not issued by this resource"


class InvalidCallContext(Exception):
    """The incomingCallContext is malformed or was not issued by this emulator."""


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(claims: Mapping[str, Any]) -> bytes:
    return orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)


def _legacy_canonical(claims: Mapping[str, Any]) -> bytes:
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _mac(secret: bytes, claims: Mapping[str, Any], canonical: Callable[[Mapping[str, Any]], bytes] = _canonical) -> str:
    return _b64url(hmac.new(secret, canonical(claims), hashlib.sha256).digest())


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


# The token's first segment never changes.
_HEADER_SEG = _b64url(orjson.dumps(_HEADER))


def encode_call_context(secret: bytes, claims: Mapping[str, Any]) -> str:
    """Seal ``claims`` (JSON-serialisable, string keys, no ``mac`` key) into an incomingCallContext."""
    if _MAC_FIELD in claims:
        raise ValueError(f"claims must not contain the reserved key {_MAC_FIELD!r}")
    if not _finite(claims):  # orjson would write null
        raise ValueError("claims must not hold NaN or Infinity")
    sealed = {**claims, _MAC_FIELD: _mac(secret, claims)}
    # A 512-byte window: setting up zlib's default state took ~100 µs per call, more than the compressing; a
    # context is a few hundred bytes, so it compresses as well. Still plain gzip, mtime 0.
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + 9)
    blob = packer.compress(_canonical(sealed)) + packer.flush()
    payload_seg = _b64url(orjson.dumps({"cc": base64.b64encode(blob).decode("ascii")}))
    return f"{_HEADER_SEG}.{payload_seg}."


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    data = inflater.decompress(blob, _MAX_INFLATED_BYTES)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("gzip stream too large or truncated")
    return data


def decode_call_context(secret: bytes, token: str) -> dict[str, Any]:
    """Return the claims sealed in ``token``; raise :class:`InvalidCallContext` if it is not genuine."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise InvalidCallContext(MALFORMED)
    parts = token.split(".")
    if len(parts) != 3 or parts[2] != "":
        raise InvalidCallContext(MALFORMED)
    try:
        header = orjson.loads(_b64url_decode(parts[0]))
        payload = orjson.loads(_b64url_decode(parts[1]))
        if not isinstance(header, dict) or header.get("alg") != "none":
            raise ValueError("unexpected header")
        if not isinstance(payload, dict) or not isinstance(payload.get("cc"), str):
            raise ValueError("no cc field")
        # orjson refuses NaN and Infinity, which no context of ours holds.
        sealed = orjson.loads(_inflate(base64.b64decode(payload["cc"], validate=True)))
    except (ValueError, binascii.Error, zlib.error) as exc:
        raise InvalidCallContext(MALFORMED) from exc
    if not isinstance(sealed, dict) or not isinstance(sealed.get(_MAC_FIELD), str):
        raise InvalidCallContext(MALFORMED)
    given = sealed.pop(_MAC_FIELD).encode("utf-8")
    try:
        if hmac.compare_digest(given, _mac(secret, sealed).encode("ascii")):
            return sealed
        if hmac.compare_digest(given, _mac(secret, sealed, _legacy_canonical).encode("ascii")):
            return sealed
    except TypeError as exc:  # an integer past 64 bits: never in a context of ours
        raise InvalidCallContext(MALFORMED) from exc
    raise InvalidCallContext(FOREIGN)
