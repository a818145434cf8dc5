"""Past capacity callgrid answers 429 with Retry-After, as ACS throttles; the SDK waits and retries.

A server bounded to one request in flight; one request held in flight by a raw connection that sends its
headers and only part of its body. Observed through the official Identity SDK and `/metrics`.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.communication.identity import CommunicationIdentityClient
from azure.core.exceptions import HttpResponseError

from callgrid.security import sign_request
from callgrid.testing import CallgridServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    process = CallgridServer(
        tmp_path_factory.mktemp("throttle"),
        tls_dir=callgrid_tls_dir,
        env={"CALLGRID_MAX_REQUESTS_IN_FLIGHT": "1"},
    ).start()
    yield process
    process.stop()


def _metrics(server: CallgridServer) -> dict[str, float]:
    text = requests.get(server.endpoint + "/metrics", verify=server.ca_bundle, timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(callgrid_http_\w+) (\S+)$", text, re.M)}


def _until(condition: Any, what: str) -> None:
    """Polls a condition the server reaches on its own; the bound is only there to end a broken run."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _hold_a_request(server: CallgridServer) -> ssl.SSLSocket:
    """A request that stays in flight: signed, its headers sent, its body only begun (the signature's
    content hash keeps the server reading it)."""
    path, body = "/identities?api-version=2023-10-01", b'{"createTokenWithScopes": []}'
    host = urlsplit(server.endpoint).netloc
    signed = sign_request("POST", path, host, body, server.access_key, datetime.now(UTC))
    head = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
    context = ssl.create_default_context(cafile=server.ca_bundle)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:1]
    )
    _until(lambda: _metrics(server)["callgrid_http_requests_in_flight"] == 1, "the held request is in flight")
    return sock


def test_past_capacity_a_request_is_refused_with_429_and_retry_after(server: CallgridServer) -> None:
    before = _metrics(server)["callgrid_http_requests_throttled"]
    held = _hold_a_request(server)
    try:
        client = CommunicationIdentityClient.from_connection_string(server.connection_string, retry_total=0)
        with pytest.raises(HttpResponseError) as refused:
            client.create_user()
    finally:
        held.close()
    assert refused.value.status_code == 429
    assert refused.value.error is not None and refused.value.error.code == "TooManyRequests"
    assert refused.value.response.headers["Retry-After"] == "1"
    metrics = _metrics(server)
    assert metrics["callgrid_http_requests_throttled"] == before + 1
    assert metrics["callgrid_http_max_requests_in_flight"] == 1
    _until(lambda: _metrics(server)["callgrid_http_requests_in_flight"] == 0, "the held request ended")


def test_the_sdk_waits_for_retry_after_and_its_retry_succeeds(server: CallgridServer) -> None:
    before = _metrics(server)["callgrid_http_requests_throttled"]
    held = _hold_a_request(server)
    statuses: list[int] = []
    created: list[str] = []

    def create() -> None:
        client = CommunicationIdentityClient.from_connection_string(server.connection_string)  # default retries
        user = client.create_user(raw_response_hook=lambda r: statuses.append(r.http_response.status_code))
        created.append(user.properties["id"])

    caller = threading.Thread(target=create)
    caller.start()
    try:
        _until(lambda: _metrics(server)["callgrid_http_requests_throttled"] == before + 1, "the SDK was refused")
    finally:
        held.close()  # capacity comes back; the SDK's retry, Retry-After later, is admitted
    caller.join(30)
    assert not caller.is_alive()
    assert statuses[0] == 429 and statuses[-1] == 201
    assert created and created[0].startswith("8:acs:")
    # What was accepted is there: the identity the retry created can be given a token.
    client = CommunicationIdentityClient.from_connection_string(server.connection_string)
    from azure.communication.identity import CommunicationUserIdentifier

    token = client.get_token(CommunicationUserIdentifier(created[0]), scopes=["voip"])
    assert token.token


def test_scrapes_and_health_probes_are_never_refused(server: CallgridServer) -> None:
    held = _hold_a_request(server)
    try:
        health = requests.get(server.endpoint + "/callgrid/v1/health", verify=server.ca_bundle, timeout=10)
        assert health.status_code == 200
        assert _metrics(server)["callgrid_http_requests_in_flight"] == 1
    finally:
        held.close()


async def test_deliveries_running_late_refuse_requests_until_they_catch_up(tmp_path: Path) -> None:
    """The second trigger, on a real store: a due delivery 10 s late is seen by the sampler and requests that
    could add work are refused, while reads are still answered; once it is claimed (as the delivery engine
    claims it) the lag is gone and everything is admitted again."""
    from callgrid.api.throttle import Admission
    from callgrid.clock import VirtualClock
    from callgrid.store import DeliveryRow, open_store

    clock = VirtualClock()
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    admission = Admission(256, retry_after_seconds=1, max_delivery_lag_seconds=0.5)
    watching = asyncio.create_task(admission.watch_deliveries(store, clock, interval=0.01))
    try:
        now = clock.now()
        async with store.transaction() as tx:
            await tx.add_event("e1", "/topic", "{}", now - 10)
            await tx.add_delivery(
                DeliveryRow(
                    id="d1",
                    kind="eventgrid",
                    event_id="e1",
                    url="http://x",
                    created_at=now - 10,
                    next_attempt_at=now - 10,
                )
            )
        await _until_async(lambda: admission.delivery_lag_seconds > 0, "the sampler saw the late delivery")
        assert admission.delivery_lag_seconds == pytest.approx(10, abs=0.5)
        assert admission.refuses("POST") and admission.refuses("PUT") and admission.refuses("DELETE")
        assert not admission.refuses("GET") and not admission.refuses("HEAD")
        async with store.transaction() as tx:
            assert [r.id for r, _ in await tx.claim_deliveries(now, 10, now + 60)] == ["d1"]
        await _until_async(lambda: admission.delivery_lag_seconds == 0, "the lag was gone once claimed")
        assert not admission.refuses("POST")
    finally:
        watching.cancel()
        await store.close()


async def test_deliveries_waiting_in_the_engine_count_as_lag_too(tmp_path: Path) -> None:
    """Claimed rows waiting in the engine for a slot are leased, so the store's due rows miss them: what the
    engine says has waited in its memory is lag as well, and none once it says nothing waits."""
    from callgrid.api.throttle import Admission
    from callgrid.clock import VirtualClock
    from callgrid.store import open_store

    clock = VirtualClock()
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    admission = Admission(256, retry_after_seconds=1, max_delivery_lag_seconds=0.5)
    waiting: list[float] = [clock.now() - 10]
    watching = asyncio.create_task(
        admission.watch_deliveries(store, clock, interval=0.01, waiting_since=lambda: waiting[0] if waiting else None)
    )
    try:
        await _until_async(lambda: admission.delivery_lag_seconds > 0, "the sampler saw the engine's backlog")
        assert admission.delivery_lag_seconds == pytest.approx(10, abs=0.5)
        assert admission.refuses("POST") and not admission.refuses("GET")
        waiting.clear()
        await _until_async(lambda: admission.delivery_lag_seconds == 0, "the lag was gone once sent")
        assert not admission.refuses("POST")
    finally:
        watching.cancel()
        await store.close()


async def _until_async(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)
