"""The sealed incomingCallContext."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
from typing import Any

import pytest

from callgrid.security.call_context import (
    InvalidCallContext,
    decode_call_context,
    encode_call_context,
    new_secret,
)

CLAIMS: dict[str, Any] = {
    "callId": "a0619022-0b2b-4ff2-a622-ff6aaee5c60a",
    "offerId": "offer-1",
    "exp": 1795462637.25,
    "nested": {"b": [1, 2, "three"], "a": None},
    "text": "naïve ☎",
}


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _rebuild(header: str, sealed: dict[str, Any]) -> str:
    blob = base64.b64encode(gzip.compress(json.dumps(sealed).encode())).decode()
    payload = base64.urlsafe_b64encode(json.dumps({"cc": blob}).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}."


def _sealed(token: str) -> dict[str, Any]:
    cc = _b64url_json(token.split(".")[1])["cc"]
    result: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(cc, validate=True)))
    return result


def test_round_trip_and_shape() -> None:
    secret = new_secret()
    token = encode_call_context(secret, CLAIMS)
    head, payload, signature = token.split(".")
    assert signature == "" and token.endswith(".")
    assert _b64url_json(head) == {"alg": "none", "typ": "JWT"}
    assert set(_b64url_json(payload)) == {"cc"}
    assert "mac" in _sealed(token)
    assert decode_call_context(secret, token) == CLAIMS
    # Deterministic for the same input (gzip mtime pinned).
    assert encode_call_context(secret, CLAIMS) == token


def test_other_secret_rejected() -> None:
    token = encode_call_context(new_secret(), CLAIMS)
    with pytest.raises(InvalidCallContext, match="was not issued by this resource"):
        decode_call_context(new_secret(), token)


def test_altered_claims_rejected() -> None:
    secret = new_secret()
    token = encode_call_context(secret, CLAIMS)
    sealed = _sealed(token)
    sealed["exp"] = sealed["exp"] + 3600
    with pytest.raises(InvalidCallContext, match="was not issued by this resource"):
        decode_call_context(secret, _rebuild(token.split(".")[0], sealed))
    # Re-serialising the genuine claims differently (key order, spacing) is still genuine.
    genuine = dict(reversed(list(_sealed(token).items())))
    assert decode_call_context(secret, _rebuild(token.split(".")[0], genuine)) == CLAIMS


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJjYyI6IkVNVUxBVE9SIn0.",  # the spec's placeholder
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30.",  # no cc
        "!!!.???.",
        "x" * 100_000,
    ],
)
def test_malformed(token: str) -> None:
    with pytest.raises(InvalidCallContext, match="malformed"):
        decode_call_context(new_secret(), token)


def test_signed_token_rejected() -> None:
    secret = new_secret()
    token = encode_call_context(secret, CLAIMS)
    with pytest.raises(InvalidCallContext, match="malformed"):
        decode_call_context(secret, token + "c2ln")


def test_missing_mac_and_non_object() -> None:
    secret = new_secret()
    header = encode_call_context(secret, CLAIMS).split(".")[0]
    with pytest.raises(InvalidCallContext, match="malformed"):
        decode_call_context(secret, _rebuild(header, dict(CLAIMS)))
    blob = base64.b64encode(gzip.compress(b"[1, 2]")).decode()
    payload = base64.urlsafe_b64encode(json.dumps({"cc": blob}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidCallContext, match="malformed"):
        decode_call_context(secret, f"{header}.{payload}.")


def test_gzip_bomb_rejected() -> None:
    secret = new_secret()
    header = encode_call_context(secret, CLAIMS).split(".")[0]
    bomb = gzip.compress(b'{"a":"' + b"x" * 5_000_000 + b'"}')
    payload = base64.urlsafe_b64encode(json.dumps({"cc": base64.b64encode(bomb).decode()}).encode())
    with pytest.raises(InvalidCallContext, match="malformed"):
        decode_call_context(secret, f"{header}.{payload.rstrip(b'=').decode()}.")


def test_reserved_key_and_nan_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode_call_context(new_secret(), {"mac": "x"})
    with pytest.raises(ValueError):
        encode_call_context(new_secret(), {"exp": float("nan")})


def test_secrets_are_random() -> None:
    assert len(new_secret()) == 32
    assert new_secret() != new_secret()


def test_context_sealed_by_an_earlier_version_is_honoured() -> None:
    # Earlier versions sealed over the standard library's JSON, non-ASCII escaped ("na\u00efve"): a call
    # still ringing across an upgrade, or offered by an older node, keeps its context.
    secret = new_secret()
    legacy = json.dumps(CLAIMS, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    mac = base64.urlsafe_b64encode(hmac.new(secret, legacy, hashlib.sha256).digest()).rstrip(b"=").decode()
    header = encode_call_context(secret, CLAIMS).split(".")[0]
    token = _rebuild(header, {**CLAIMS, "mac": mac})
    assert decode_call_context(secret, token) == CLAIMS
    with pytest.raises(InvalidCallContext, match="not issued"):
        decode_call_context(new_secret(), token)


def test_non_finite_numbers_in_a_forged_blob_are_malformed() -> None:
    secret = new_secret()
    header = encode_call_context(secret, CLAIMS).split(".")[0]
    for text in ('{"exp": NaN, "mac": "x"}', '{"exp": Infinity, "mac": "x"}'):
        blob = base64.b64encode(gzip.compress(text.encode())).decode()
        payload = base64.urlsafe_b64encode(json.dumps({"cc": blob}).encode()).rstrip(b"=").decode()
        with pytest.raises(InvalidCallContext, match="malformed"):
            decode_call_context(secret, f"{header}.{payload}.")
