"""Repeatability-Request-ID: a retried request gets the first response and acts once (acs-wire.md 1.6)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.communication.callautomation import CommunicationUserIdentifier

from callgrid.security import format_http_date, sign_request
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import World, make_world

PATH = "/calling/callConnections?api-version=2026-03-12"


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def send(server: CallgridServer, path: str, body: dict[str, Any], request_id: str | None) -> requests.Response:
    """One signed request, freshly dated each time, as azure-core's retry policy re-sends it."""
    raw = json.dumps(body).encode()
    now = datetime.now(UTC)
    headers = sign_request("POST", path, urlsplit(server.endpoint).netloc, raw, server.access_key, now)
    headers["Content-Type"] = "application/json"
    if request_id is not None:
        headers["Repeatability-Request-ID"] = request_id
        headers["Repeatability-First-Sent"] = format_http_date(now)
    return requests.post(server.endpoint + path, data=raw, headers=headers, verify=server.ca_bundle)


def create_body(world: World, user: str) -> dict[str, Any]:
    return {
        "targets": [{"rawId": user, "communicationUser": {"id": user}}],
        "callbackUri": world.callback_url,
        "operationContext": "once",
    }


def test_a_replayed_create_call_returns_the_first_response_and_rings_once(world: World) -> None:
    body = create_body(world, world.user())
    request_id = str(uuid.uuid4())
    first = send(world.server, PATH, body, request_id)
    second = send(world.server, PATH, body, request_id)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert len(world.client.request("GET", "/callgrid/v1/calls")["value"]) == 1
    world.incoming(0)
    world.server.advance(0.001)  # let anything else that was queued arrive
    assert world.incoming_count() == 1
    third = send(world.server, PATH, body, str(uuid.uuid4()))
    assert third.json()["callConnectionId"] != first.json()["callConnectionId"]


def test_a_failure_is_replayed_too_and_changes_nothing(world: World) -> None:
    body = {"incomingCallContext": "not-a-context", "callbackUri": world.callback_url}
    request_id = str(uuid.uuid4())
    path = "/calling/callConnections:answer?api-version=2026-03-12"
    first = send(world.server, path, body, request_id)
    second = send(world.server, path, body, request_id)
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()
    assert first.json()["error"]["code"] == "8523"


def test_the_same_id_for_a_different_request_is_a_conflict(world: World) -> None:
    user = world.user()
    request_id = str(uuid.uuid4())
    assert send(world.server, PATH, create_body(world, user), request_id).status_code == 201
    other = send(world.server, PATH, {**create_body(world, user), "operationContext": "other"}, request_id)
    assert other.status_code == 409
    assert len(world.client.request("GET", "/callgrid/v1/calls")["value"]) == 1


def test_a_malformed_id_is_rejected(world: World) -> None:
    response = send(world.server, PATH, create_body(world, world.user()), "not-a-uuid")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "8523"
    assert world.client.request("GET", "/callgrid/v1/calls")["value"] == []


def test_the_cache_is_bounded_in_time(world: World) -> None:
    body = create_body(world, world.user())
    request_id = str(uuid.uuid4())
    first = send(world.server, PATH, body, request_id).json()
    world.server.advance(601)
    again = send(world.server, PATH, body, request_id).json()
    assert again["callConnectionId"] != first["callConnectionId"]


def test_the_sdk_retry_with_its_own_id_acts_once(world: World) -> None:
    user = CommunicationUserIdentifier(world.user())
    request_id = str(uuid.uuid4())
    first = world.automation.create_call(user, world.callback_url, headers={"Repeatability-Request-ID": request_id})
    again = world.automation.create_call(user, world.callback_url, headers={"Repeatability-Request-ID": request_id})
    assert again.call_connection_id == first.call_connection_id
    connection = world.automation.get_call_connection(first.call_connection_id)
    terminate_id = str(uuid.uuid4())
    connection.hang_up(True, headers={"Repeatability-Request-ID": terminate_id})
    # A second terminate of an ended call would fail; the replay answers as the first did.
    connection.hang_up(True, headers={"Repeatability-Request-ID": terminate_id})
    assert len(world.client.request("GET", "/callgrid/v1/calls")["value"]) == 1


@pytest.fixture
def crashable(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, callgrid: CallgridServer
) -> Iterator[CallgridServer]:
    # Rings long enough for the clock to pass a killed node's delivery leases (below).
    server = CallgridServer(
        tmp_path_factory.mktemp("repeatable-crash"), tls_dir=callgrid_tls_dir, ring_timeout=300
    ).start()
    yield server
    server.stop()


def test_a_retry_after_a_crash_returns_the_first_response_and_acts_once(
    crashable: CallgridServer, webhook: WebhookReceiver
) -> None:
    world = make_world(crashable, webhook)
    body = create_body(world, world.user())
    request_id = str(uuid.uuid4())
    first = send(crashable, PATH, body, request_id)
    assert first.status_code == 201
    crashable.restart(hard=True)  # SIGKILL: the operation and its cached answer were committed together
    # An IncomingCall the killed process had claimed goes out again: at once on SQLite (a starting node
    # releases the leases), once its 60 s lease has passed on a shared store (other nodes may hold leases).
    crashable.advance(61)
    again = send(crashable, PATH, body, request_id)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Repeatability-Result"] == "accepted"
    calls = world.client.request("GET", "/callgrid/v1/calls")["value"]
    assert [c["serverCallId"] for c in calls] == [first.json()["serverCallId"]]
    # A mid-call action too: the retried add-participant names the same invitation and rings once.
    context = world.incoming(0).data["incomingCallContext"]
    ccid = first.json()["callConnectionId"]
    answer_id = str(uuid.uuid4())
    answer = {"incomingCallContext": context, "callbackUri": world.callback_url}
    assert send(crashable, "/calling/callConnections:answer?api-version=2026-03-12", answer, answer_id).ok
    world.callbacks(ccid, 2)
    add_path = f"/calling/callConnections/{ccid}/participants:add?api-version=2026-03-12"
    invitee = world.user()
    add = {"participantToAdd": {"rawId": invitee, "communicationUser": {"id": invitee}}}
    add_id = str(uuid.uuid4())
    invited = send(crashable, add_path, add, add_id)
    assert invited.status_code == 202
    crashable.restart(hard=True)
    reinvited = send(crashable, add_path, add, add_id)
    assert reinvited.json()["invitationId"] == invited.json()["invitationId"]
    world.incoming(1)
    crashable.advance(0.001)
    # Rings once: two IncomingCall events. A SIGKILL between a delivery's POST and the record of its outcome
    # sends that same event again after the restart (at-least-once, same event id), which is not a ring.
    assert len({e["id"] for e in world.webhook.events("Microsoft.Communication.IncomingCall")}) == 2


def test_copies_of_one_request_racing_each_other_act_once(world: World) -> None:
    body = create_body(world, world.user())
    request_id = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: send(world.server, PATH, body, request_id), range(8)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["callConnectionId"] for r in responses}) == 1
    assert len(world.client.request("GET", "/callgrid/v1/calls")["value"]) == 1
