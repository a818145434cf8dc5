"""Validating the RS256 JWT that ACS puts on every Call Automation callback.

Keys come from a JWKS (Microsoft's for a real resource, an emulator's otherwise); issuer and audience
(the resource's immutable id) are checked, as Microsoft documents for callback receivers.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import jwt as pyjwt


class InvalidCallbackToken(Exception):
    pass


class CallbackVerifier:
    def __init__(self, jwks_url: str, issuer: str, audience: str | None) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        # The default context honours SSL_CERT_FILE, so an emulator's CA can be trusted the usual way.
        self._keys = pyjwt.PyJWKClient(
            jwks_url, cache_keys=True, lifespan=3600, ssl_context=ssl.create_default_context()
        )

    def verify(self, authorization: str | None) -> dict[str, Any]:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise InvalidCallbackToken("the callback carries no bearer token.")
        if not self.audience:
            raise InvalidCallbackToken("the router has no JWT audience configured (the resource's immutable id).")
        token = authorization[7:].strip()
        try:
            key = self._keys.get_signing_key_from_jwt(token).key
            claims: dict[str, Any] = pyjwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (pyjwt.PyJWTError, pyjwt.PyJWKClientError) as exc:
            raise InvalidCallbackToken(f"the callback token is not valid: {exc}") from None
        return claims

    async def averify(self, authorization: str | None) -> dict[str, Any]:
        # The key fetch is blocking urllib; keep it off the event loop.
        return await asyncio.to_thread(self.verify, authorization)
