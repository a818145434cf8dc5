"""The ``incomingCallContext`` of an IncomingCall event.

Shaped like the real service's value (an unsigned JWT whose payload is ``{"cc": <base64 gzip blob>}``,
acs-wire.md 4.2), but the blob carries an HMAC so a client cannot forge or alter one. Expiry and
single use are the caller's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import zlib
from collections.abc import Mapping
from typing import Any

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
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _mac(secret: bytes, claims: Mapping[str, Any]) -> str:
    return _b64url(hmac.new(secret, _canonical(claims), hashlib.sha256).digest())


def encode_call_context(secret: bytes, claims: Mapping[str, Any]) -> str:
    """Seal ``claims`` (JSON-serialisable, string keys, no ``mac`` key) into an incomingCallContext."""
    if _MAC_FIELD in claims:
        raise ValueError(f"claims must not contain the reserved key {_MAC_FIELD!r}")
    sealed = {**claims, _MAC_FIELD: _mac(secret, claims)}
    # A 512-byte window and the least memory: setting up zlib's default state took ~100 µs per call, more than
    # the compressing; a context is a few hundred bytes, so it compresses as well. Still plain gzip, mtime 0.
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + 9, 1)
    blob = packer.compress(_canonical(sealed)) + packer.flush()
    payload = {"cc": base64.b64encode(blob).decode("ascii")}
    header_seg = _b64url(json.dumps(_HEADER, separators=(",", ":")).encode("ascii"))
    payload_seg = _b64url(json.dumps(payload, separators=(",", ":")).encode("ascii"))
    return f"{header_seg}.{payload_seg}."


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
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        if not isinstance(header, dict) or header.get("alg") != "none":
            raise ValueError("unexpected header")
        if not isinstance(payload, dict) or not isinstance(payload.get("cc"), str):
            raise ValueError("no cc field")
        sealed = json.loads(_inflate(base64.b64decode(payload["cc"], validate=True)))
    except (ValueError, binascii.Error, zlib.error, RecursionError) as exc:
        raise InvalidCallContext(MALFORMED) from exc
    if not isinstance(sealed, dict) or not isinstance(sealed.get(_MAC_FIELD), str):
        raise InvalidCallContext(MALFORMED)
    given = sealed.pop(_MAC_FIELD)
    try:
        expected = _mac(secret, sealed)
    except ValueError as exc:  # e.g. NaN smuggled in: never produced by encode_call_context
        raise InvalidCallContext(MALFORMED) from exc
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("ascii")):
        raise InvalidCallContext(FOREIGN)
    return sealed
