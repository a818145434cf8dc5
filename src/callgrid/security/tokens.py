"""JWTs the emulator issues: ACS user access tokens, callback tokens, ARM bearer tokens and Entra ID-shaped
bearer tokens for the ACS data plane (all RS256)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from callgrid.security.keys import key_id

__all__ = [
    "ACS_AUDIENCE",
    "ARM_AUDIENCE",
    "ARM_SUBJECT",
    "TokenError",
    "issue_acs_access_token",
    "issue_arm_token",
    "issue_entra_token",
    "sign_callback_token",
    "verify_acs_access_token",
    "verify_arm_token",
    "verify_entra_token",
]

ARM_AUDIENCE = "https://management.azure.com/"
ARM_SUBJECT = "callgrid-local-user"
# The resource the ACS SDKs ask Entra ID for: scope "https://communication.azure.com//.default" (sic, the
# azure-communication-* auth_policy_utils), so the token's audience is the resource without the scope.
ACS_AUDIENCE = "https://communication.azure.com"
ENTRA_LIFETIME = timedelta(hours=1)  # what Entra ID gives by default (60-90 minutes)
# ``scp`` value seen in real ACS tokens.
ACS_SCP = 1792
RESOURCE_LOCATION = "unitedstates"
# Tolerance for iat/nbf slightly in the future (clock differences between processes).
_LEEWAY = timedelta(seconds=60)

# In compact JSON these characters can only occur inside strings. Each one, on some byte positions,
# yields a '-' or '_' in base64url, which the SDK's standard-base64 decoder rejects (acs-wire.md 2.3).
# A JSON \\u escape removes them from the text without changing the decoded value.
_BASE64URL_HOSTILE = {">": "\\u003e", "?": "\\u003f", "~": "\\u007e", "\x7f": "\\u007f"}


class TokenError(Exception):
    """A token is not acceptable; the message says why."""


def _ts(value: datetime) -> int:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return int(aware.timestamp())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sdk_safe_json(value: dict[str, Any]) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    for char, escaped in _BASE64URL_HOSTILE.items():
        text = text.replace(char, escaped)
    return text.encode("ascii")


def issue_acs_access_token(
    key: rsa.RSAPrivateKey,
    *,
    resource_id: str,
    user_id: str,
    scopes: Sequence[str],
    issued_at: datetime,
    expires_at: datetime,
) -> str:
    """An ACS user access token shaped like the real service's.

    ``user_id`` is the full raw id (``8:acs:<resource>_<guid>``). The payload segment is guaranteed to
    contain no ``-``/``_`` so ``CommunicationTokenCredential`` (standard base64 decoding) accepts it.
    """
    header = {"alg": "RS256", "kid": key_id(key), "typ": "JWT"}
    iat = _ts(issued_at)
    payload = {
        "skypeid": user_id.removeprefix("8:"),
        "scp": ACS_SCP,
        "csi": str(iat),
        "exp": _ts(expires_at),
        "acsScope": ",".join(scopes),
        "resourceId": resource_id,
        "resourceLocation": RESOURCE_LOCATION,
        "iat": iat,
    }
    payload_segment = _b64url(_sdk_safe_json(payload))
    if "-" in payload_segment or "_" in payload_segment:  # pragma: no cover - excluded by construction
        raise RuntimeError("ACS token payload would not be decodable by the SDK")
    signing_input = f"{_b64url(_sdk_safe_json(header))}.{payload_segment}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


def _decode(key: rsa.RSAPublicKey, token: str, required: list[str]) -> dict[str, Any]:
    """Check signature and shape only; time and audience checks are done by the callers against ``now``."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": required,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature is invalid (it was not issued by this emulator)") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError("token must be signed with RS256") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token is missing the {exc.claim!r} claim") from exc
    except jwt.DecodeError as exc:
        raise TokenError("token is malformed (not a signed JWT)") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"token is invalid: {exc}") from exc
    return claims


def _check_times(claims: dict[str, Any], now: datetime) -> None:
    current = _ts(now)
    for name in ("exp", "nbf", "iat"):
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int | float)):
            raise TokenError(f"token claim {name!r} is not a number")
    if current >= claims["exp"]:
        expired_at = datetime.fromtimestamp(claims["exp"], UTC).isoformat()
        raise TokenError(f"token has expired (at {expired_at})")
    leeway = _LEEWAY.total_seconds()
    if "nbf" in claims and current + leeway < claims["nbf"]:
        raise TokenError("token is not valid yet (nbf is in the future)")
    if "iat" in claims and current + leeway < claims["iat"]:
        raise TokenError("token was issued in the future (iat); check the clock")


def verify_acs_access_token(key: rsa.RSAPublicKey, token: str, *, now: datetime) -> dict[str, Any]:
    """Verify an ACS user token issued by :func:`issue_acs_access_token`; return its claims."""
    claims = _decode(key, token, ["exp", "iat", "skypeid", "resourceId"])
    _check_times(claims, now)
    return claims


def sign_callback_token(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = timedelta(minutes=5),
) -> str:
    """The bearer token put on each mid-call callback POST (acs-wire.md 6.4)."""
    iat = _ts(now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id(key)})


def issue_arm_token(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    now: datetime,
    lifetime: timedelta = timedelta(days=365),
    subject: str = ARM_SUBJECT,
) -> str:
    """A bearer token for callgrid's Azure-Resource-Manager-shaped routes; `subject` is the principal (the
    default resource's owner, or one resource's: api/auth.py decides what it may reach)."""
    iat = _ts(now)
    claims = {
        "iss": issuer,
        "aud": ARM_AUDIENCE,
        "sub": subject,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id(key)})


def verify_arm_token(key: rsa.RSAPublicKey, token: str, *, now: datetime) -> dict[str, Any]:
    """Verify a token from :func:`issue_arm_token`; return its claims or raise :class:`TokenError`."""
    claims = _decode(key, token, ["exp", "aud"])
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # ARM clients ask for "https://management.azure.com/.default"; tolerate the slash-less spelling too.
    if not any(isinstance(a, str) and a.rstrip("/") == ARM_AUDIENCE.rstrip("/") for a in audiences):
        raise TokenError(f"token audience is {claims['aud']!r}, expected {ARM_AUDIENCE!r}")
    _check_times(claims, now)
    return claims


def _audiences(claims: dict[str, Any]) -> list[Any]:
    aud = claims["aud"]
    return aud if isinstance(aud, list) else [aud]


def issue_entra_token(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    resource_id: str,
    now: datetime,
    lifetime: timedelta = ENTRA_LIFETIME,
    audience: str = ACS_AUDIENCE,
) -> str:
    """A bearer token as Entra ID would issue one for the ACS data plane, from callgrid's own key.

    Entra ID knows nothing of the resource (Azure decides by role assignment on it); callgrid names the
    resource (its immutable id) in a ``resourceId`` claim, so a token for one resource is refused by another.
    """
    if lifetime <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    iat = _ts(now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": ARM_SUBJECT,
        "oid": ARM_SUBJECT,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "jti": str(uuid.uuid4()),
        "resourceId": resource_id,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id(key)})


def verify_entra_token(
    key: rsa.RSAPublicKey,
    token: str,
    *,
    issuer: str,
    resource_id: str,
    now: datetime,
    audience: str = ACS_AUDIENCE,
) -> dict[str, Any]:
    """Verify a token from :func:`issue_entra_token` for ``resource_id``: RS256 signature by ``key``,
    issuer, audience, resource, and exp/nbf/iat against ``now``. Return its claims or raise :class:`TokenError`."""
    claims = _decode(key, token, ["iss", "aud", "exp", "nbf", "iat", "resourceId"])
    if claims["iss"] != issuer:
        raise TokenError(f"token issuer is {claims['iss']!r}, expected {issuer!r}")
    # Entra ID spells the ACS audience without a trailing slash; the SDK's scope has one (or two).
    if not any(isinstance(a, str) and a.rstrip("/") == audience.rstrip("/") for a in _audiences(claims)):
        raise TokenError(f"token audience is {claims['aud']!r}, expected {audience!r}")
    if claims["resourceId"] != resource_id:
        raise TokenError("token is for another Communication resource")
    _check_times(claims, now)
    return claims
