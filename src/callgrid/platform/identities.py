"""Communication identities and their access tokens.

An identity belongs to the resource whose immutable id its raw id carries (`8:acs:<immutableId>_<guid>`):
every method takes the resource a request is for, and an identity of another resource is not found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from callgrid.clock import Clock, iso_z, to_datetime
from callgrid.errors import InvalidRequest, NotFound
from callgrid.platform.resource import CommunicationResource
from callgrid.security import issue_acs_access_token
from callgrid.store import StoreTx

TOKEN_SCOPES = frozenset({"chat", "voip", "chat.join", "chat.join.limited", "voip.join"})
DEFAULT_TOKEN_MINUTES = 24 * 60


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_on: str


class IdentityService:
    def __init__(self, signing_key: rsa.RSAPrivateKey, clock: Clock) -> None:
        self._key = signing_key
        self._clock = clock

    @staticmethod
    def new_user_id(resource: CommunicationResource) -> str:
        return f"{resource.user_prefix}{uuid.uuid4()}"

    async def create_user(self, tx: StoreTx, resource: CommunicationResource) -> str:
        user_id = self.new_user_id(resource)
        await tx.add_identity(user_id, self._clock.now())
        return user_id

    async def list_identities(self, tx: StoreTx, resource: CommunicationResource, limit: int) -> list[dict[str, Any]]:
        """`resource`'s newest `limit` identities first: raw id, when created, when its tokens were last
        revoked."""
        return [
            {
                "rawId": row["id"],
                "createdAt": iso_z(row["createdAt"]),
                "tokensRevokedAt": None if row["tokensRevokedAt"] is None else iso_z(row["tokensRevokedAt"]),
            }
            for row in await tx.list_identities(limit, resource.user_prefix)
        ]

    async def exists(self, tx: StoreTx, resource: CommunicationResource, user_id: str) -> bool:
        return resource.owns_user(user_id) and await tx.get_identity(user_id) is not None

    async def require(self, tx: StoreTx, resource: CommunicationResource, user_id: str) -> None:
        if not await self.exists(tx, resource, user_id):
            raise NotFound(f"Identity '{user_id}' does not exist in this resource.", code="IdentityNotFound")

    async def issue_token(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        user_id: str,
        scopes: list[str],
        expires_in_minutes: int | None,
    ) -> AccessToken:
        await self.require(tx, resource, user_id)
        if not scopes:
            raise InvalidRequest("At least one scope is required (chat, voip, ...).", code="ValidationError")
        if not all(isinstance(scope, str) for scope in scopes):
            raise InvalidRequest("Token scopes must be strings (chat, voip, ...).", code="ValidationError")
        unknown = sorted(set(scopes) - TOKEN_SCOPES)
        if unknown:
            raise InvalidRequest(
                f"Unknown token scope(s): {', '.join(unknown)}. Valid scopes: {', '.join(sorted(TOKEN_SCOPES))}.",
                code="ValidationError",
            )
        minutes = DEFAULT_TOKEN_MINUTES if expires_in_minutes is None else expires_in_minutes
        if not 60 <= minutes <= 1440:
            raise InvalidRequest("expiresInMinutes must be between 60 and 1440 minutes.", code="ValidationError")
        now = self._clock.now()
        # Whole seconds, so the expiry the SDK reads from the token equals the one in the body.
        now = float(int(now))
        expires = now + minutes * 60
        token = issue_acs_access_token(
            self._key,
            resource_id=resource.immutable_id,
            user_id=user_id,
            scopes=scopes,
            issued_at=to_datetime(now),
            expires_at=to_datetime(now) + timedelta(minutes=minutes),
        )
        return AccessToken(token=token, expires_on=iso_z(expires))

    async def revoke_tokens(self, tx: StoreTx, resource: CommunicationResource, user_id: str) -> None:
        await self.require(tx, resource, user_id)
        await tx.revoke_identity_tokens(user_id, self._clock.now())

    async def delete_user(self, tx: StoreTx, resource: CommunicationResource, user_id: str) -> None:
        if not resource.owns_user(user_id) or not await tx.delete_identity(user_id):
            raise NotFound(f"Identity '{user_id}' does not exist in this resource.", code="IdentityNotFound")
