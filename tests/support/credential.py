"""The TokenCredential the README shows: it hands the SDKs a token `callgrid token` (or `callgrid env`) minted,
and records the scopes they ask for."""

from __future__ import annotations

import base64
import json
from typing import Any

from azure.core.credentials import AccessToken


def expires_on(token: str) -> int:
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


class CallgridCredential:
    """azure.core.credentials.TokenCredential over one token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, expires_on(self.token))


class AsyncCallgridCredential(CallgridCredential):
    """azure.core.credentials_async.AsyncTokenCredential, for the `.aio` clients."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        return super().get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncCallgridCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
