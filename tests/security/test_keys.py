"""RSA key persistence, kid and JWKS."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from callgrid.security.keys import jwks, key_id, load_or_create_rsa_key


def test_create_then_load_same_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "signing-key.pem"
    key = load_or_create_rsa_key(path)
    assert key.key_size == 2048
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    again = load_or_create_rsa_key(path)
    assert again.private_numbers() == key.private_numbers()
    assert key_id(again) == key_id(key)
    assert not list(path.parent.glob("*.tmp"))


def test_non_rsa_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="RSA"):
        load_or_create_rsa_key(path)


def test_key_id_stable_and_distinct() -> None:
    a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert key_id(a) == key_id(a.public_key())
    assert key_id(a) != key_id(b)
    assert len(key_id(a)) == 22
    assert set(key_id(a)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_jwks_round_trips_through_pyjwt() -> None:
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    document = jwks([k.public_key() for k in keys])
    assert [entry["kid"] for entry in document["keys"]] == [key_id(k) for k in keys]
    for entry, private in zip(document["keys"], keys, strict=True):
        assert entry["kty"] == "RSA" and entry["use"] == "sig" and entry["alg"] == "RS256"
        assert entry["e"] == "AQAB"
        assert "=" not in entry["n"]
        public = jwt.PyJWK(entry).key
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.public_numbers() == private.public_key().public_numbers()
    key_set = jwt.PyJWKSet.from_dict(document)
    assert len(key_set.keys) == 2
