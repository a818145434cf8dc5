"""Identity API through `CommunicationIdentityClient`, sync and async."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.communication.identity import CommunicationIdentityClient, CommunicationTokenScope
from azure.communication.identity._shared.user_credential import CommunicationTokenCredential
from azure.communication.identity.aio import CommunicationIdentityClient as AsyncIdentityClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from callgrid.testing import CallgridServer


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def test_create_user_and_tokens(callgrid: CallgridServer) -> None:
    client = CommunicationIdentityClient.from_connection_string(callgrid.connection_string)
    user = client.create_user()
    immutable_id = callgrid.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
    assert user.properties["id"].startswith(f"8:acs:{immutable_id}_")

    token = client.get_token(user, [CommunicationTokenScope.VOIP, CommunicationTokenScope.CHAT])
    claims = _claims(token.token)
    assert claims["skypeid"] == user.properties["id"].removeprefix("8:")
    assert claims["acsScope"] == "voip,chat"
    expires = datetime.fromisoformat(str(token.expires_on).replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24, minutes=1)

    # The calling/chat SDKs' token credential parses the token exactly as the real one.
    credential = CommunicationTokenCredential(token.token)
    assert credential.get_token().token == token.token

    other, short = client.create_user_and_token([CommunicationTokenScope.VOIP], token_expires_in=timedelta(hours=1))
    assert other.properties["id"] != user.properties["id"]
    short_expiry = datetime.fromisoformat(str(short.expires_on).replace("Z", "+00:00"))
    assert short_expiry - datetime.now(UTC) <= timedelta(hours=1, minutes=1)

    client.revoke_tokens(user)
    client.delete_user(user)
    with pytest.raises(ResourceNotFoundError):
        client.get_token(user, [CommunicationTokenScope.VOIP])
    with pytest.raises(ResourceNotFoundError):
        client.delete_user(user)


def test_token_validation_errors(callgrid: CallgridServer) -> None:
    client = CommunicationIdentityClient.from_connection_string(callgrid.connection_string)
    user = client.create_user()
    with pytest.raises(HttpResponseError) as too_short:
        client.get_token(user, [CommunicationTokenScope.VOIP], token_expires_in=timedelta(minutes=10))
    assert too_short.value.status_code == 400
    assert "60 and 1440" in str(too_short.value)
    with pytest.raises(HttpResponseError) as no_scope:
        client.get_token(user, [])
    assert no_scope.value.status_code == 400


async def test_async_identity_client(callgrid: CallgridServer) -> None:
    # The async client signs the decoded path; callgrid accepts that variant too.
    async with AsyncIdentityClient.from_connection_string(callgrid.connection_string) as client:
        user = await client.create_user()
        token = await client.get_token(user, [CommunicationTokenScope.VOIP])
        assert token.token.count(".") == 2
        await client.delete_user(user)
