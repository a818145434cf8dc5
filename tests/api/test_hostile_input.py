"""Hostile requests on a real server: deep JSON, type confusion, odd digits and dates, unknown actions.

Each is answered in ACS's (or ARM's) error shape with a 4xx, never a 500, and the connection stays usable.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
import requests
from azure.communication.identity import CommunicationIdentityClient
from azure.communication.phonenumbers import PhoneNumbersClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from callgrid.security import sign_request
from callgrid.testing import CallgridServer
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.support.arm import arm_headers, subscription_url

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000


def _signed_headers(server: CallgridServer, method: str, path: str, body: bytes) -> dict[str, str]:
    headers = sign_request(method, path, f"localhost:{server.port}", body, server.access_key, datetime.now(UTC))
    return {**headers, "Content-Type": "application/json"}


def _connection(server: CallgridServer) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=server.ca_bundle)
    return http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)


def _exchange(
    conn: http.client.HTTPSConnection, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    return response.status, (json.loads(raw) if raw else {})


def _assert_error(status: int, body: dict[str, object], expected: int) -> dict[str, str]:
    assert status == expected, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) >= {"code", "message"}
    return error


# ---- 1. deeply nested JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("deep", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
def test_deep_json_on_a_signed_route_is_400_and_the_connection_survives(fresh: CallgridServer, deep: bytes) -> None:
    path = "/callgrid/v1/phoneNumbers"
    conn = _connection(fresh)
    status, body = _exchange(conn, "POST", path, deep, _signed_headers(fresh, "POST", path, deep))
    error = _assert_error(status, body, 400)
    assert "nest" in error["message"]
    ok = json.dumps({"phoneNumber": "+14255550999"}).encode()
    status, body = _exchange(conn, "POST", path, ok, _signed_headers(fresh, "POST", path, ok))
    assert status == 201, body
    conn.close()


def test_deep_json_on_an_arm_put_is_400_in_arms_shape(fresh: CallgridServer) -> None:
    url = subscription_url(fresh, "deep")
    path = url.removeprefix(fresh.endpoint)
    conn = _connection(fresh)
    headers = {**arm_headers(fresh), "Content-Type": "application/json"}
    status, body = _exchange(conn, "PUT", path, DEEP_OBJECT, headers)
    assert _assert_error(status, body, 400)["code"] == "InvalidRequestContent"
    status, body = _exchange(conn, "GET", path, b"", headers)
    assert status == 404, body
    conn.close()


def test_deep_json_published_to_a_topic_is_400(fresh: CallgridServer) -> None:
    topic = create_topic(fresh, "deep-topic")
    path = topic.endpoint.removeprefix(fresh.endpoint)
    conn = _connection(fresh)
    headers = {"aeg-sas-key": topic_key(fresh, "deep-topic"), "Content-Type": "application/json"}
    status, body = _exchange(conn, "POST", path, DEEP, headers)
    _assert_error(status, body, 400)
    event = {"id": "1", "subject": "s", "eventType": "t", "dataVersion": "1", "eventTime": "2026-01-01T00:00:00Z"}
    status, body = _exchange(conn, "POST", path, json.dumps([{**event, "data": {}}]).encode(), headers)
    assert status == 200, body
    conn.close()


# ---- 3. ASCII digits only -------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["+1425555\uff11\uff12\uff11\uff12", "+1425555\u0661\u0662\u0661\u0662"])
def test_numbers_with_non_ascii_digits_are_refused(fresh: CallgridServer, number: str) -> None:
    path = "/callgrid/v1/phoneNumbers"
    body = json.dumps({"phoneNumber": number}).encode()
    response = requests.post(fresh.endpoint + path, data=body, headers=_signed_headers(fresh, "POST", path, body))
    assert _assert_error(response.status_code, response.json(), 400)
    with pytest.raises((ResourceNotFoundError, HttpResponseError)):
        PhoneNumbersClient.from_connection_string(fresh.connection_string).get_purchased_phone_number(number)


def test_place_call_from_a_fullwidth_number_is_refused(fresh: CallgridServer) -> None:
    fresh.client().own_number("+14255551212")
    path = "/callgrid/v1/calls"
    body = json.dumps({"from": "+1206555\uff10\uff11\uff10\uff10", "to": "+14255551212"}).encode()
    response = requests.post(fresh.endpoint + path, data=body, headers=_signed_headers(fresh, "POST", path, body))
    _assert_error(response.status_code, response.json(), 400)


# ---- 4. dates that overflow, bodies of the wrong type ----------------------------------------------


def test_an_x_ms_date_beyond_year_9999_is_401(fresh: CallgridServer) -> None:
    path = "/callgrid/v1/phoneNumbers"
    body = json.dumps({"phoneNumber": "+14255550777"}).encode()
    headers = _signed_headers(fresh, "POST", path, body)
    headers["x-ms-date"] = "Sat, 28 Nov 99999999999 23:40:00 GMT"
    response = requests.post(fresh.endpoint + path, data=body, headers=headers)
    assert _assert_error(response.status_code, response.json(), 401)["code"] == "Denied"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/identities?api-version=2023-10-01", {"createTokenWithScopes": [1, 2]}),
        ("/identities?api-version=2023-10-01", {"createTokenWithScopes": ["chat"], "expiresInMinutes": 1e300}),
        ("/identities?api-version=2023-10-01", {"createTokenWithScopes": ["chat"], "expiresInMinutes": 10**30}),
        ("/callgrid/v1/clock:advance", {"seconds": "ten"}),
        ("/callgrid/v1/clock:advance", {"seconds": 1e309}),
        ("/callgrid/v1/clock:advance", {"seconds": 1e300}),  # past the year 9999: the clock would be infinite
        ("/callgrid/v1/clock:advance", {"seconds": 1, "patienceSeconds": 1e300}),
        ("/callgrid/v1/phoneNumbers", {"phoneNumber": ["+14255550777"]}),
        ("/callgrid/v1/calls", {"from": {"x": 1}, "to": 5}),
        ("/callgrid/v1/calls", {"from": "+12065550100", "to": "+14255551212", "customContext": [1]}),
        ("/calling/callConnections:answer?api-version=2025-05-15", {"incomingCallContext": 1, "callbackUri": []}),
        ("/calling/callConnections:redirect?api-version=2025-05-15", {"incomingCallContext": "x", "target": "8:x"}),
        ("/calling/callConnections:reject?api-version=2025-05-15", {"incomingCallContext": "x", "callRejectReason": 7}),
        ("/calling/callConnections?api-version=2025-05-15", {"targets": "8:acs:x", "callbackUri": "http://x"}),
        ("/calling/callConnections?api-version=2025-05-15", {"targets": [7], "callbackUri": "http://x"}),
        ("/calling/callConnections?api-version=2025-05-15", {"targets": [{"rawId": 7}], "callbackUri": "http://x"}),
    ],
)
def test_bodies_of_the_wrong_type_are_400(fresh: CallgridServer, path: str, body: object) -> None:
    data = json.dumps(body).encode()
    response = requests.post(fresh.endpoint + path, data=data, headers=_signed_headers(fresh, "POST", path, data))
    assert 400 <= response.status_code < 500, response.text
    _assert_error(response.status_code, response.json(), response.status_code)


def test_sdk_create_user_and_token_still_works(fresh: CallgridServer) -> None:
    client = CommunicationIdentityClient.from_connection_string(fresh.connection_string)
    user, token = client.create_user_and_token(["chat"])
    assert user.properties["id"].startswith("8:acs:") and token.token


# ---- 6. unknown call-connection actions ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/calling/callConnections/abc:fooBar", "/calling/callConnections/abc/participants:fooBar"]
)
def test_an_unknown_call_connection_action_is_404(fresh: CallgridServer, path: str) -> None:
    full = path + "?api-version=2025-05-15"
    response = requests.post(
        fresh.endpoint + quote(full, safe="/:?=&"), data=b"{}", headers=_signed_headers(fresh, "POST", full, b"{}")
    )
    assert _assert_error(response.status_code, response.json(), 404)["code"] == "NotFound"


def _signed_post(server: CallgridServer, path: str, body: object) -> requests.Response:
    data = json.dumps(body).encode()
    return requests.post(server.endpoint + path, data=data, headers=_signed_headers(server, "POST", path, data))


def _connected_call(server: CallgridServer) -> str:
    user = CommunicationIdentityClient.from_connection_string(server.connection_string).create_user().properties["id"]
    server.client().set_endpoint(user, "answer")
    target = {"kind": "communicationUser", "communicationUser": {"id": user}, "rawId": user}
    created = _signed_post(
        server,
        "/calling/callConnections?api-version=2025-05-15",
        {"targets": [target], "callbackUri": "http://127.0.0.1:9/cb"},
    )
    assert created.status_code == 201, created.text
    ccid: str = created.json()["callConnectionId"]
    path = f"/calling/callConnections/{ccid}?api-version=2025-05-15"
    for _ in range(100):
        state = requests.get(server.endpoint + path, headers=_signed_headers(server, "GET", path, b"")).json()
        if state.get("callConnectionState") == "connected":
            return ccid
        time.sleep(0.05)
    raise AssertionError(f"call {ccid} never connected: {state}")


def test_media_actions_with_wrong_types_are_400(fresh: CallgridServer) -> None:
    # Found by a type-confusion fuzz of every action's fields: each was a 500 (TypeError, AttributeError).
    ccid = _connected_call(fresh)
    user = "8:acs:x"
    target = {"kind": "communicationUser", "communicationUser": {"id": user}, "rawId": user}
    file = {"kind": "file", "file": {"uri": "http://127.0.0.1:9/a.wav"}}
    recognize = {"recognizeInputType": "dtmf", "recognizeOptions": {"targetParticipant": target}}
    cases = [
        (":play", {"playSources": [{"kind": "file", "file": "http://127.0.0.1:9/a.wav"}]}),
        (":recognize", {**recognize, "playPrompts": [{"kind": "file", "file": 1}]}),
        (":recognize", {**recognize, "playPrompts": 1}),
        (
            ":recognize",
            {
                **recognize,
                "playPrompts": [file],
                "recognizeOptions": {"targetParticipant": target, "dtmfOptions": {"stopTones": 5}},
            },
        ),
        (":hold", {"targetParticipant": target, "playSourceInfo": {"kind": "file", "file": [1]}}),
    ]
    for action, body in cases:
        response = _signed_post(fresh, f"/calling/callConnections/{ccid}{action}?api-version=2025-05-15", body)
        assert response.status_code == 400, (action, body, response.text)
        assert response.json()["error"]["code"] == "8523"
