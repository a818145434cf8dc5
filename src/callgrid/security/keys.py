"""The RSA signing key (callback JWTs, ACS user tokens, ARM tokens) and its JWKS form; the console's token."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from callgrid.security._files import write_atomic

__all__ = ["jwks", "key_id", "load_or_create_rsa_key", "load_or_create_token"]

KEY_SIZE = 2048


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def load_or_create_rsa_key(path: Path) -> rsa.RSAPrivateKey:
    """Load the PEM key at ``path``, or create a 2048-bit one there (PKCS#8, mode 0600).

    Keeping the key on disk keeps ``kid`` stable across restarts, so apps caching the JWKS keep working.
    """
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)
    return key


def load_or_create_token(path: Path) -> str:
    """A random URL-safe secret kept at ``path`` (mode 0600), created on first use: the console's login
    token, stable across restarts so a bookmarked login link keeps working."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    write_atomic(path, token.encode(), mode=0o600)
    return token


def _public(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    return key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key


def key_id(public_key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """A stable ``kid``: base64url of the first 16 bytes of SHA-256 over the DER SubjectPublicKeyInfo."""
    der = _public(public_key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha256(der).digest()[:16])


def jwks(keys: Sequence[rsa.RSAPublicKey | rsa.RSAPrivateKey]) -> dict[str, Any]:
    """A JSON Web Key Set document for ``keys`` (only public parts are emitted)."""
    entries: list[dict[str, str]] = []
    for key in keys:
        numbers = _public(key).public_numbers()
        entries.append(
            {
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": key_id(key),
                "n": _b64url(_int_bytes(numbers.n)),
                "e": _b64url(_int_bytes(numbers.e)),
            }
        )
    return {"keys": entries}
