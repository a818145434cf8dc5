"""The node's signing keys and secrets, the same on every node that serves one resource.

With a one-node store (SQLite) the RSA keys are files in the data directory, as they always were. With a
shared store (PostgreSQL) they live in the store's meta table, so that an ARM token, an access token, a
callback JWT or an incomingCallContext minted by one node is honoured by every other; the first node to
start creates them, under a lock, and the others load them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from callgrid.security import load_or_create_rsa_key, new_secret
from callgrid.security.keys import KEY_SIZE
from callgrid.store import Store, StoreTx


@dataclass
class Keys:
    token_key: rsa.RSAPrivateKey  # identity access tokens and the ARM bearer token
    callback_key: rsa.RSAPrivateKey  # callback JWTs (served as JWKS)
    context_secret: bytes  # incomingCallContext MACs


async def load_or_create_keys(store: Store, data_dir: Path) -> Keys:
    async with store.transaction() as tx:
        # Two nodes starting together: the second waits, then reads what the first created.
        await tx.lock("callgrid.keys")
        secret = await tx.get_meta("calls.contextSecret")
        if secret is None:
            secret = base64.b64encode(new_secret()).decode()
            await tx.set_meta("calls.contextSecret", secret)
        if store.shared:
            token_key = await _stored_rsa_key(tx, "keys.tokenSigning")
            callback_key = await _stored_rsa_key(tx, "keys.callbackSigning")
    if not store.shared:
        token_key = load_or_create_rsa_key(data_dir / "keys" / "token-signing.pem")
        callback_key = load_or_create_rsa_key(data_dir / "keys" / "callback-signing.pem")
    return Keys(token_key=token_key, callback_key=callback_key, context_secret=base64.b64decode(secret))


async def _stored_rsa_key(tx: StoreTx, name: str) -> rsa.RSAPrivateKey:
    pem = await tx.get_meta(name)
    if pem is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        await tx.set_meta(name, pem)
        return key
    loaded = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"the store's {name} is not an RSA private key")
    return loaded
