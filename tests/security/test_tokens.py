"""ACS user tokens, callback tokens and ARM tokens."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from azure.communication.identity._shared.user_credential import CommunicationTokenCredential
from azure.communication.identity._shared.utils import create_access_token
from cryptography.hazmat.primitives.asymmetric import rsa

from callgrid.security.keys import jwks, key_id
from callgrid.security.tokens import (
    ARM_AUDIENCE,
    TokenError,
    issue_acs_access_token,
    issue_arm_token,
    issue_entra_token,
    sign_callback_token,
    verify_acs_access_token,
    verify_arm_token,
    verify_entra_token,
)

RESOURCE = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2026, 11, 23, 19, 37, 17, tzinfo=UTC)
ISSUER = "https://acscallautomation.communication.azure.com"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _user() -> str:
    return f"8:acs:{RESOURCE}_{uuid.uuid4()}"


def _acs(key: rsa.RSAPrivateKey, user: str, *, hours: int = 24, scopes: tuple[str, ...] = ("voip",)) -> str:
    return issue_acs_access_token(
        key,
        resource_id=RESOURCE,
        user_id=user,
        scopes=scopes,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=hours),
    )


def test_acs_token_shape(key: rsa.RSAPrivateKey) -> None:
    user = _user()
    token = _acs(key, user, scopes=("chat", "voip"))
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT" and header["kid"] == key_id(key)
    claims = verify_acs_access_token(key.public_key(), token, now=NOW)
    assert claims == {
        "skypeid": user.removeprefix("8:"),
        "scp": 1792,
        "csi": str(int(NOW.timestamp())),
        "exp": int((NOW + timedelta(hours=24)).timestamp()),
        "acsScope": "chat,voip",
        "resourceId": RESOURCE,
        "resourceLocation": "unitedstates",
        "iat": int(NOW.timestamp()),
    }


def test_acs_payload_segment_is_standard_base64_safe(key: rsa.RSAPrivateKey) -> None:
    # Odd values too: characters that would map to '-'/'_' in base64url on some alignments.
    odd_resources = ["res>?~\x7f", "a?b>c~d", "???>>>~~~", "naïve?é"]
    for i in range(300):
        resource = odd_resources[i % len(odd_resources)] if i % 3 == 0 else str(uuid.uuid4())
        user = f"8:acs:{resource}_{uuid.uuid4()}"
        token = issue_acs_access_token(
            key,
            resource_id=resource,
            user_id=user,
            scopes=["chat", "voip", "chat.join"][: 1 + i % 3],
            issued_at=NOW + timedelta(seconds=i),
            expires_at=NOW + timedelta(hours=1, seconds=i * 7),
        )
        payload = token.split(".")[1]
        assert "-" not in payload and "_" not in payload
        # Exactly what the SDK does:
        decoded = json.loads(base64.b64decode(payload + "==").decode("ascii"))
        assert decoded["resourceId"] == resource
        assert decoded["skypeid"] == user.removeprefix("8:")
        claims = verify_acs_access_token(key.public_key(), token, now=NOW + timedelta(seconds=i))
        assert claims["resourceId"] == resource


def test_acs_token_accepted_by_sdk_credential(key: rsa.RSAPrivateKey) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    token = issue_acs_access_token(
        key,
        resource_id=RESOURCE,
        user_id=_user(),
        scopes=["voip"],
        issued_at=datetime.now(UTC),
        expires_at=expires,
    )
    credential = CommunicationTokenCredential(token)
    access = credential.get_token()  # type: ignore[no-untyped-call]
    assert access.token == token
    assert access.expires_on == int(expires.timestamp())
    assert create_access_token(token).expires_on == int(expires.timestamp())


def test_acs_token_expired(key: rsa.RSAPrivateKey) -> None:
    token = _acs(key, _user(), hours=1)
    verify_acs_access_token(key.public_key(), token, now=NOW + timedelta(minutes=59))
    with pytest.raises(TokenError, match="expired"):
        verify_acs_access_token(key.public_key(), token, now=NOW + timedelta(hours=1))


def test_acs_token_wrong_key_and_tampering(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    token = _acs(key, _user())
    with pytest.raises(TokenError, match="signature is invalid"):
        verify_acs_access_token(other_key.public_key(), token, now=NOW)
    head, payload, sig = token.split(".")
    forged = json.loads(base64.b64decode(payload + "=="))
    forged["acsScope"] = "chat,voip"
    forged_seg = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="signature is invalid"):
        verify_acs_access_token(key.public_key(), f"{head}.{forged_seg}.{sig}", now=NOW)
    with pytest.raises(TokenError, match="malformed"):
        verify_acs_access_token(key.public_key(), "not-a-token", now=NOW)


def test_acs_token_alg_none_rejected(key: rsa.RSAPrivateKey) -> None:
    def seg(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"exp": 9999999999, "iat": 1, "skypeid": "x", "resourceId": "r"}
    unsigned = f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."
    with pytest.raises(TokenError, match="RS256"):
        verify_acs_access_token(key.public_key(), unsigned, now=NOW)


def test_callback_token_verifies_with_jwks(key: rsa.RSAPrivateKey) -> None:
    now = datetime.now(UTC)
    token = sign_callback_token(key, issuer=ISSUER, audience=RESOURCE, now=now)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == key_id(key)
    entry = next(e for e in jwks([key.public_key()])["keys"] if e["kid"] == header["kid"])
    claims = jwt.decode(token, key=jwt.PyJWK(entry).key, algorithms=["RS256"], issuer=ISSUER, audience=RESOURCE)
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"] == int(now.timestamp())
    uuid.UUID(claims["jti"])
    other = sign_callback_token(key, issuer=ISSUER, audience=RESOURCE, now=now)
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=jwt.PyJWK(entry).key, algorithms=["RS256"], issuer=ISSUER, audience="other")


def test_callback_token_lifetime(key: rsa.RSAPrivateKey) -> None:
    token = sign_callback_token(key, issuer=ISSUER, audience=RESOURCE, now=NOW, lifetime=timedelta(minutes=1))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == int(NOW.timestamp()) + 60


def test_arm_token_round_trip(key: rsa.RSAPrivateKey) -> None:
    token = issue_arm_token(key, issuer="https://localhost:8443/", now=NOW)
    assert jwt.get_unverified_header(token)["kid"] == key_id(key)
    claims = verify_arm_token(key.public_key(), token, now=NOW + timedelta(days=1))
    assert claims["aud"] == ARM_AUDIENCE
    assert claims["sub"] == "callgrid-local-user"
    assert claims["iss"] == "https://localhost:8443/"
    assert claims["exp"] == int((NOW + timedelta(days=365)).timestamp())


def test_arm_token_errors(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    token = issue_arm_token(key, issuer="x", now=NOW, lifetime=timedelta(hours=1))
    with pytest.raises(TokenError, match="expired"):
        verify_arm_token(key.public_key(), token, now=NOW + timedelta(hours=2))
    with pytest.raises(TokenError, match="signature is invalid"):
        verify_arm_token(other_key.public_key(), token, now=NOW)
    with pytest.raises(TokenError, match="malformed"):
        verify_arm_token(key.public_key(), "a.b.c", now=NOW)
    with pytest.raises(TokenError, match="not valid yet"):
        verify_arm_token(key.public_key(), token, now=NOW - timedelta(hours=1))
    wrong_aud = sign_callback_token(key, issuer="x", audience="https://graph.microsoft.com/", now=NOW)
    with pytest.raises(TokenError, match="audience"):
        verify_arm_token(key.public_key(), wrong_aud, now=NOW)
    # An ACS user token has no audience at all.
    with pytest.raises(TokenError, match="'aud'"):
        verify_arm_token(key.public_key(), _acs(key, _user()), now=NOW)


def test_entra_token_round_trip_and_audience_spellings(key: rsa.RSAPrivateKey) -> None:
    now = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    common = {"issuer": "https://localhost:8443", "resource_id": "res-1"}
    for audience in ("https://communication.azure.com", "https://communication.azure.com/"):
        token = issue_entra_token(key, now=now, audience=audience, **common)
        claims = verify_entra_token(key.public_key(), token, now=now + timedelta(minutes=59), **common)
        assert claims["resourceId"] == "res-1" and claims["exp"] - claims["iat"] == 3600
    token = issue_entra_token(key, now=now, **common)
    with pytest.raises(TokenError, match="expired"):
        verify_entra_token(key.public_key(), token, now=now + timedelta(hours=1), **common)
    with pytest.raises(TokenError, match="another Communication resource"):
        verify_entra_token(key.public_key(), token, now=now, issuer=common["issuer"], resource_id="res-2")
    with pytest.raises(ValueError, match="positive"):
        issue_entra_token(key, now=now, lifetime=timedelta(0), **common)


def test_entra_token_refuses_an_arm_token_and_the_reverse(key: rsa.RSAPrivateKey) -> None:
    now = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    arm = issue_arm_token(key, issuer="https://localhost:8443", now=now)
    with pytest.raises(TokenError, match="missing"):
        verify_entra_token(key.public_key(), arm, issuer="https://localhost:8443", resource_id="r", now=now)
    entra = issue_entra_token(key, issuer="https://localhost:8443", resource_id="r", now=now)
    with pytest.raises(TokenError, match="audience"):
        verify_arm_token(key.public_key(), entra, now=now)
