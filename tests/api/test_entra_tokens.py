"""Entra ID bearer tokens on the ACS routes: every official client built with a TokenCredential that hands
it a token from `callgrid token` works, sync and async; a token callgrid did not issue for this resource's
data plane, or out of date on the server's clock, is refused with 401 in ACS's shape."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.communication.callautomation.aio import CallAutomationClient as AsyncCallAutomationClient
from azure.communication.identity import CommunicationIdentityClient, CommunicationTokenScope
from azure.communication.identity.aio import CommunicationIdentityClient as AsyncCommunicationIdentityClient
from azure.communication.phonenumbers import (
    PhoneNumberAssignmentType,
    PhoneNumberCapabilities,
    PhoneNumberCapabilityType,
    PhoneNumbersClient,
    PhoneNumberType,
)
from azure.communication.phonenumbers.aio import PhoneNumbersClient as AsyncPhoneNumbersClient
from azure.core.exceptions import ClientAuthenticationError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callgrid.platform.keys import load_or_create_keys
from callgrid.security import issue_acs_access_token, issue_arm_token, issue_entra_token, load_or_create_rsa_key
from callgrid.store import open_store
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, make_world
from tests.support.credential import AsyncCallgridCredential, CallgridCredential, expires_on

# What the azure-communication-* clients ask a TokenCredential for (their auth_policy_utils), verbatim.
ACS_SCOPE = ("https://communication.azure.com//.default",)
PHONE_NUMBERS = "/phoneNumbers?api-version=2025-06-01"
IDENTITIES = "/identities?api-version=2025-06-30"


def _cli(server: CallgridServer, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(server.data_dir), "--port", str(server.port)]
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args, *where], capture_output=True, text=True, env=dict(os.environ)
    )


def _minted(server: CallgridServer, *args: str) -> str:
    result = _cli(server, "token", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def credential(callgrid: CallgridServer) -> CallgridCredential:
    return CallgridCredential(_minted(callgrid))


@pytest.fixture
def async_credential(callgrid: CallgridServer) -> AsyncCallgridCredential:
    return AsyncCallgridCredential(_minted(callgrid))


def _key(server: CallgridServer) -> rsa.RSAPrivateKey:
    """The server's token-signing key where its store keeps it: a file beside SQLite, the database's meta
    table with PostgreSQL (platform/keys.py)."""
    if server.store is None:
        return load_or_create_rsa_key(server.data_dir / "keys" / "token-signing.pem")

    async def load(url: str) -> rsa.RSAPrivateKey:
        store = await open_store(url)
        try:
            return (await load_or_create_keys(store, server.data_dir)).token_key
        finally:
            await store.close()

    return asyncio.run(load(server.store))


def _server_now(server: CallgridServer) -> datetime:
    # Signatures and tokens are checked against real time, whatever the simulation's clock says (node.py).
    return datetime.now(UTC)


def _claims(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


# ---------------------------------------------------------------------------------------------- the SDKs


def test_identity_client_with_a_token_credential(callgrid: CallgridServer, credential: CallgridCredential) -> None:
    client = CommunicationIdentityClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle)
    user, token = client.create_user_and_token([CommunicationTokenScope.VOIP])
    assert user.properties["id"].startswith("8:acs:")
    assert token.token.count(".") == 2
    assert client.get_token(user, [CommunicationTokenScope.CHAT]).token
    client.revoke_tokens(user)
    client.delete_user(user)
    assert credential.scopes and set(credential.scopes) == {ACS_SCOPE}


async def test_identity_aio_client_with_a_token_credential(
    callgrid: CallgridServer, async_credential: AsyncCallgridCredential
) -> None:
    async with AsyncCommunicationIdentityClient(
        callgrid.endpoint, async_credential, connection_verify=callgrid.ca_bundle
    ) as client:
        user = await client.create_user()
        issued = await client.get_token(user, [CommunicationTokenScope.VOIP])
        assert issued.token.count(".") == 2
        await client.delete_user(user)
    assert set(async_credential.scopes) == {ACS_SCOPE}


def test_phone_numbers_client_with_a_token_credential(callgrid: CallgridServer, credential: CallgridCredential) -> None:
    callgrid.own_number("+14255550199")
    client = PhoneNumbersClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle)
    assert client.get_purchased_phone_number("+14255550199").phone_number == "+14255550199"
    # A long-running operation: its polls go through the same bearer policy.
    found = client.begin_search_available_phone_numbers(
        "US",
        PhoneNumberType.GEOGRAPHIC,
        PhoneNumberAssignmentType.APPLICATION,
        PhoneNumberCapabilities(calling=PhoneNumberCapabilityType.INBOUND_OUTBOUND, sms=PhoneNumberCapabilityType.NONE),
        area_code="425",
        polling_interval=0,
    ).result()
    client.begin_purchase_phone_numbers(found.search_id, polling_interval=0).result()
    owned = {n.phone_number for n in client.list_purchased_phone_numbers()}
    assert owned == {"+14255550199", *found.phone_numbers}
    assert set(credential.scopes) == {ACS_SCOPE}


async def test_phone_numbers_aio_client_with_a_token_credential(
    callgrid: CallgridServer, async_credential: AsyncCallgridCredential
) -> None:
    callgrid.own_number("+14255550198")
    async with AsyncPhoneNumbersClient(
        callgrid.endpoint, async_credential, connection_verify=callgrid.ca_bundle
    ) as client:
        assert [n.phone_number async for n in client.list_purchased_phone_numbers()] == ["+14255550198"]


def _user(server: CallgridServer) -> str:
    raw_id: str = server.client().request("POST", "/identities?api-version=2025-06-30", {})["identity"]["id"]
    return raw_id


def test_call_automation_client_with_a_token_credential(
    callgrid: CallgridServer, credential: CallgridCredential, webhook: WebhookReceiver
) -> None:
    user = _user(callgrid)
    callgrid.set_device(user, "answer")
    client = CallAutomationClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle)
    created = client.create_call(CommunicationUserIdentifier(user), webhook.url + "/callbacks")
    webhook.wait_until(lambda: any(e["type"].endswith("CallConnected") for e in webhook.callbacks()))
    assert created.call_connection_id is not None
    connection = client.get_call_connection(created.call_connection_id)
    assert connection.get_call_properties().call_connection_state == "connected"
    assert user in [p.identifier.raw_id for p in connection.list_participants() if p.identifier is not None]
    connection.hang_up(is_for_everyone=True)
    assert set(credential.scopes) == {ACS_SCOPE}


async def test_call_automation_aio_client_with_a_token_credential(
    callgrid: CallgridServer, async_credential: AsyncCallgridCredential, webhook: WebhookReceiver
) -> None:
    user = _user(callgrid)
    callgrid.set_device(user, "answer")
    async with AsyncCallAutomationClient(
        callgrid.endpoint, async_credential, connection_verify=callgrid.ca_bundle
    ) as client:
        created = await client.create_call(CommunicationUserIdentifier(user), webhook.url + "/callbacks")
        webhook.wait_until(lambda: any(e["type"].endswith("CallConnected") for e in webhook.callbacks()))
        assert created.call_connection_id is not None
        connection = client.get_call_connection(created.call_connection_id)
        assert (await connection.get_call_properties()).call_connection_state == "connected"
        await connection.hang_up(is_for_everyone=True)
    assert set(async_credential.scopes) == {ACS_SCOPE}


def test_an_expired_token_fails_the_sdk_call(callgrid: CallgridServer) -> None:
    credential = CallgridCredential(_minted(callgrid, "--lifetime", "5s"))
    client = CommunicationIdentityClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle)
    client.create_user()
    # Like an ARM token or a request signature, a bearer token lives in real time, not the simulation's.
    callgrid.advance(3600)
    client.create_user()
    time.sleep(max(0.0, expires_on(credential.token) - time.time() + 1))
    with pytest.raises(ClientAuthenticationError) as refused:
        client.create_user()
    assert refused.value.status_code == 401
    assert refused.value.error is not None and refused.value.error.code == "Denied"
    assert "expired" in str(refused.value.error.message)


# ---------------------------------------------------------------------------------------------- refusals


def _unsigned(claims: dict[str, object]) -> str:
    def segment(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 365 * 86400
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _entra(server: CallgridServer, key: rsa.RSAPrivateKey | None = None, **overrides: object) -> str:
    args: dict[str, object] = {
        "issuer": server.endpoint,
        "resource_id": server.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
        "now": _server_now(server),
    }
    args.update(overrides)
    return issue_entra_token(key or _key(server), **args)  # type: ignore[arg-type]


def _hs256_with_public_key(server: CallgridServer) -> str:
    # The algorithm-confusion attack: a verifier that let the token pick its algorithm would take the
    # (public) RSA key as an HMAC secret.
    public_pem = _key(server).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header, payload, _ = _entra(server).split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


BAD_TOKENS: dict[str, tuple[Callable[[CallgridServer], str], str]] = {
    "expired": (
        lambda s: _entra(s, now=_server_now(s) - timedelta(hours=2), lifetime=timedelta(hours=1)),
        "expired",
    ),
    "not yet valid": (lambda s: _entra(s, now=_server_now(s) + timedelta(hours=1)), "not valid yet"),
    "wrong audience": (lambda s: _entra(s, audience="https://storage.azure.com"), "audience"),
    "ARM token": (lambda s: issue_arm_token(_key(s), issuer=s.endpoint, now=_server_now(s)), "missing"),
    "wrong issuer": (
        lambda s: _entra(s, issuer="https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"),
        "issuer",
    ),
    "another resource": (lambda s: _entra(s, resource_id=str(uuid.uuid4())), "another Communication resource"),
    "tampered": (lambda s: _tampered(_entra(s)), "signature"),
    "alg none": (
        lambda s: _unsigned({**_claims(_entra(s)), "exp": int(_server_now(s).timestamp()) + 3600}),
        "RS256",
    ),
    "other key": (
        lambda s: _entra(s, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "signature",
    ),
    "HS256 keyed with the public key": (lambda s: _hs256_with_public_key(s), "RS256"),
    "ACS user token": (
        lambda s: issue_acs_access_token(
            _key(s),
            resource_id=s.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
            user_id=f"8:acs:{s.env['CALLGRID_IMMUTABLE_RESOURCE_ID']}_{uuid.uuid4()}",
            scopes=["voip"],
            issued_at=_server_now(s),
            expires_at=_server_now(s) + timedelta(hours=1),
        ),
        "missing",
    ),
    "not a JWT": (lambda s: "not-a-token", "malformed"),
    "empty": (lambda s: "", "no token"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
@pytest.mark.parametrize(("method", "path"), [("GET", PHONE_NUMBERS), ("POST", IDENTITIES)])
def test_a_token_callgrid_did_not_issue_for_this_resource_is_refused(
    callgrid: CallgridServer, case: str, method: str, path: str
) -> None:
    make, reason = BAD_TOKENS[case]
    response = requests.request(
        method,
        callgrid.endpoint + path,
        headers={"Authorization": f"Bearer {make(callgrid)}", "Content-Type": "application/json"},
        data=b"{}" if method == "POST" else None,
        verify=callgrid.ca_bundle,
        timeout=30,
    )
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "Denied"
    assert error["message"].startswith("Denied by the resource provider.")
    assert reason in error["message"]


def test_the_same_requests_pass_with_a_good_token(callgrid: CallgridServer) -> None:
    headers = {"Authorization": f"Bearer {_entra(callgrid)}", "Content-Type": "application/json"}
    listed = requests.get(callgrid.endpoint + PHONE_NUMBERS, headers=headers, verify=callgrid.ca_bundle, timeout=30)
    assert listed.status_code == 200, listed.text
    created = requests.post(
        callgrid.endpoint + IDENTITIES, headers=headers, data=b"{}", verify=callgrid.ca_bundle, timeout=30
    )
    assert created.status_code == 201, created.text
    # callgrid's own routes take the same token as the access key.
    clock = requests.get(
        callgrid.endpoint + "/callgrid/v1/clock", headers=headers, verify=callgrid.ca_bundle, timeout=30
    )
    assert clock.status_code == 200, clock.text


def test_a_refused_token_fails_the_sdk_call(callgrid: CallgridServer) -> None:
    credential = CallgridCredential(_entra(callgrid, audience="https://management.azure.com/"))
    client = PhoneNumbersClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle, retry_total=0)
    with pytest.raises(ClientAuthenticationError) as refused:
        list(client.list_purchased_phone_numbers())
    assert refused.value.status_code == 401


# ---------------------------------------------------------------------------------------------- the CLI


def test_callgrid_token_mints_for_the_acs_audience_with_a_lifetime(callgrid: CallgridServer) -> None:
    claims = _claims(_minted(callgrid, "--lifetime", "30m"))
    assert claims["aud"] == "https://communication.azure.com"
    assert claims["iss"] == callgrid.endpoint
    assert claims["resourceId"] == callgrid.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]
    assert claims["exp"] == claims["iat"] + 1800  # type: ignore[operator]
    default = _claims(_minted(callgrid))
    assert default["exp"] == default["iat"] + 3600  # type: ignore[operator]

    document = json.loads(_minted(callgrid, "--json", "--lifetime", "2h"))
    assert document["tokenType"] == "Bearer" and document["audience"] == "https://communication.azure.com"
    assert document["expires_on"] == _claims(document["accessToken"])["exp"]
    assert datetime.fromisoformat(document["expiresOn"]).timestamp() == document["expires_on"]

    arm = _minted(callgrid, "--arm")
    assert _claims(arm)["aud"] == "https://management.azure.com/"
    listed = requests.get(
        f"{callgrid.endpoint}{callgrid.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions"
        "?api-version=2025-02-15",
        headers={"Authorization": f"Bearer {arm}"},
        verify=callgrid.ca_bundle,
        timeout=30,
    )
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize("lifetime", ["0", "soon", "-5m", "3651d", "1w"])
def test_callgrid_token_refuses_a_lifetime_it_cannot_mint(callgrid: CallgridServer, lifetime: str) -> None:
    result = _cli(callgrid, "token", "--lifetime", lifetime)
    assert result.returncode == 2
    assert "lifetime" in result.stderr.lower() or "duration" in result.stderr.lower()


def test_callgrid_env_exports_an_acs_token(callgrid: CallgridServer) -> None:
    token = callgrid.acs_token
    client = CommunicationIdentityClient(
        callgrid.endpoint, CallgridCredential(token), connection_verify=callgrid.ca_bundle
    )
    assert client.create_user().properties["id"].startswith("8:acs:")


def test_recordings_with_a_token_credential(
    callgrid: CallgridServer, credential: CallgridCredential, webhook: WebhookReceiver
) -> None:
    world = make_world(callgrid, webhook)
    client = CallAutomationClient(callgrid.endpoint, credential, connection_verify=callgrid.ca_bundle)
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    answered = client.answer_call(world.incoming(0).data["incomingCallContext"], world.callback_url)
    assert answered.call_connection_id is not None
    world.callbacks(answered.call_connection_id, 2)
    started = client.start_recording(server_call_id=placed["serverCallId"])
    assert started.recording_id is not None
    assert client.get_recording_properties(started.recording_id).recording_state == "active"
    callgrid.advance(2)
    client.stop_recording(started.recording_id)
    event = webhook.wait_until(lambda: world.system_events("Microsoft.Communication.RecordingFileStatusUpdated"))[0]
    chunk = event.data["recordingStorageInfo"]["recordingChunks"][0]
    # The SDK's download_recording (1.6) fetches only from Azure's recording hosts (a server without
    # --recording-host announces its own), so an app GETs contentLocation itself, with the same bearer token.
    bearer = {"Authorization": f"Bearer {credential.token}"}
    content = requests.get(chunk["contentLocation"], headers=bearer, verify=callgrid.ca_bundle, timeout=30)
    assert content.status_code == 200 and content.content[:4] == b"RIFF"
    deleted = requests.delete(chunk["deleteLocation"], headers=bearer, verify=callgrid.ca_bundle, timeout=30)
    assert deleted.status_code == 200
