"""Two real `callgrid serve` processes on one PostgreSQL database, the way a team runs a shared callgrid
behind a load balancer: any node answers any request, and a node SIGKILLed mid-delivery loses nothing.

The nodes run on the system clock (a virtual clock is one node's own), with short ring timeouts and
response time limits so that a dead node's leases and timers fall to the survivor within seconds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.communication.identity import CommunicationIdentityClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from callgrid.client import CallgridHttpError
from callgrid.testing import CallgridServer, Received, WebhookReceiver
from callgrid.testing.stores import drop_schema, fresh_postgres_url
from tests.eventgrid.delivery.helpers import wait_for
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.eventgrid.rest import put, topic_subscription_url, wait_state, webhook_properties
from tests.support.arm import arm_headers, put_subscription, subscription_url

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

OWNED = "+14255551212"
CALLER = "+12065550100"
INCOMING_CALL = "Microsoft.Communication.IncomingCall"
EVENTS = 10_000
RING_TIMEOUT = 3.0
# Leases last the response time limit + 30 s: a dead node's rows are due again ~35 s after it claimed them.
DELIVERY_TIMEOUT = 5.0


@pytest.fixture
def two_nodes(tmp_path: Path, callgrid_tls_dir: Path) -> Iterator[tuple[CallgridServer, CallgridServer]]:
    url, schema = fresh_postgres_url("multinode")
    env = {"CALLGRID_DELIVERY_TIMEOUT_SECONDS": str(DELIVERY_TIMEOUT)}
    nodes = [
        CallgridServer(
            tmp_path / name,
            tls_dir=callgrid_tls_dir,
            clock="system",
            ring_timeout=RING_TIMEOUT,
            store=url,
            env=env,
        )
        for name in ("node-a", "node-b")
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()
        drop_schema(schema)


def test_a_call_placed_on_one_node_is_answered_through_the_other(
    two_nodes: tuple[CallgridServer, CallgridServer], webhook: WebhookReceiver
) -> None:
    a, b = two_nodes
    # One resource: the same connection string key and resource id on both; keys are in the database.
    assert a.access_key == b.access_key and a.resource_id == b.resource_id

    sub = put_subscription(a, "router-app", webhook.url + "/api/incoming")
    assert sub["properties"]["provisioningState"] == "Succeeded"
    # An ARM token minted by node A is honoured by node B, which sees the subscription A made.
    seen_on_b = requests.get(subscription_url(b, "router-app"), headers=arm_headers(a), timeout=10)
    assert seen_on_b.status_code == 200, seen_on_b.text
    assert seen_on_b.json()["properties"]["provisioningState"] == "Succeeded"

    user = CommunicationIdentityClient.from_connection_string(b.connection_string).create_user().properties["id"]
    a.client().own_number(OWNED)
    b.client().set_endpoint(user, "answer")

    placed = a.client().place_call(CALLER, OWNED)
    incoming = EventGridEvent.from_dict(webhook.wait_until(lambda: webhook.events(INCOMING_CALL))[0])
    assert incoming.data["serverCallId"] == placed["serverCallId"]

    # The incomingCallContext minted by node A is redeemed on node B, with Microsoft's SDK.
    CallAutomationClient.from_connection_string(b.connection_string).redirect_call(
        incoming.data["incomingCallContext"], CommunicationUserIdentifier(user)
    )
    webhook.wait_until(lambda: webhook.events(INCOMING_CALL)[1:])
    call = webhook.wait_until(lambda: (c := a.get_call(placed["serverCallId"]))["state"] == "connected" and c)
    assert [p["rawId"] for p in call["participants"]] == ["4:" + CALLER, user]
    assert [t["event"] for t in call["timeline"]] == ["callPlaced", "ringing", "redirected", "ringing", "answered"]
    # The handshake and each IncomingCall went out once, not once per node.
    assert [r.header("aeg-event-type") for r in webhook.received] == ["SubscriptionValidation"] + ["Notification"] * 2


def test_a_resource_made_or_rekeyed_on_one_node_is_seen_at_once_by_the_other(
    two_nodes: tuple[CallgridServer, CallgridServer],
) -> None:
    a, b = two_nodes

    def identities(node: CallgridServer, key: str) -> CommunicationIdentityClient:
        return CommunicationIdentityClient.from_connection_string(
            f"endpoint={node.endpoint};accesskey={key}", connection_verify=node.ca_bundle, retry_total=0
        )

    def refused_on_b(key: str) -> None:
        with pytest.raises(HttpResponseError) as failure:
            identities(b, key).create_user()
        assert failure.value.status_code == 401

    made = a.client().request("POST", "/callgrid/v1/resources", {"name": "team-b"})
    # Signed with the new resource's key, straight away on the other node: accepted, as that resource's.
    user = identities(b, made["primaryKey"]).create_user().properties["id"]
    assert user.startswith(f"8:acs:{made['immutableResourceId']}_")
    assert [r["name"] for r in b.client().request("GET", "/callgrid/v1/resources")["value"]] == ["callgrid", "team-b"]

    renewed = a.client().request("POST", "/callgrid/v1/resources/team-b:regenerateKey", {"keyType": "primary"})
    # The retired key is refused on node B from the moment node A answered; the new one and the secondary work.
    refused_on_b(made["primaryKey"])
    identities(b, renewed["primaryKey"]).create_user()
    identities(b, made["secondaryKey"]).create_user()

    # A change made on B is what A starts from: regenerating the secondary on B keeps A's new primary.
    again = b.client().request("POST", "/callgrid/v1/resources/team-b:regenerateKey", {"keyType": "secondary"})
    assert again["primaryKey"] == renewed["primaryKey"]
    with pytest.raises(HttpResponseError) as failure:
        identities(a, made["secondaryKey"]).create_user()
    assert failure.value.status_code == 401
    # Nor can B make a second resource of the name A made.
    with pytest.raises(CallgridHttpError) as taken:
        b.client().request("POST", "/callgrid/v1/resources", {"name": "team-b"})
    assert taken.value.status == 409

    # Deleted on A: its keys are refused on B.
    a.delete_resource("team-b")
    refused_on_b(renewed["primaryKey"])
    refused_on_b(again["secondaryKey"])


def test_a_node_killed_mid_delivery_loses_nothing_and_its_timers_fire_on_the_survivor(
    two_nodes: tuple[CallgridServer, CallgridServer],
) -> None:
    a, b = two_nodes
    received: list[tuple[str, str]] = []  # (event id, aeg-delivery-count): one attempt of one event
    lock = threading.Lock()

    def slowish(item: Received) -> tuple[int, Any]:
        time.sleep(0.002)
        with lock:
            received.extend((e["id"], item.header("aeg-delivery-count") or "") for e in item.body)
        return 200, None

    hook = WebhookReceiver(responder=slowish)
    try:
        topic = create_topic(a, "orders")
        url = topic_subscription_url(a, "orders", "orders-app")
        assert put(a, url, webhook_properties(hook.url)).status_code == 201
        assert wait_state(a, url)["properties"]["provisioningState"] == "Succeeded"

        # Calls that ring on node B's watch and are never answered: their ring timeouts are in the database.
        user = CommunicationIdentityClient.from_connection_string(b.connection_string).create_user().properties["id"]
        b.client().set_endpoint(user, "ring")
        calls = [b.client().place_call(CALLER, user)["serverCallId"] for _ in range(3)]

        key = AzureKeyCredential(topic_key(a, "orders"))
        publishers = [
            EventGridPublisherClient(topic.endpoint.replace(str(a.port), str(node.port)), key) for node in (a, b)
        ]
        for start in range(0, EVENTS, 1000):
            # Half published on each node; every send is acknowledged (durable) before the next.
            publishers[(start // 1000) % 2].send(
                [
                    EventGridEvent(
                        subject=f"/orders/{i}",
                        event_type="Contoso.Order.Created",
                        data={"n": i},
                        data_version="1.0",
                        id=f"order-{i}",
                    )
                    for i in range(start, start + 1000)
                ]
            )
        with lock:
            before_kill = list(received)
        assert len({e for e, _ in before_kill}) < EVENTS, "all delivered before the kill: nothing was in flight"
        b.kill()

        def all_seen() -> bool:
            with lock:
                return len({e for e, _ in received}) == EVENTS

        # The dead node's leased rows come due again when their leases end (DELIVERY_TIMEOUT + 30 s).
        wait_for(all_seen, timeout=180)
        with lock:
            final = list(received)
        assert {e for e, _ in final} == {f"order-{i}" for i in range(EVENTS)}
        # While both nodes lived, no attempt of any event went out twice.
        assert not [k for k, n in Counter(before_kill).items() if n > 1]
        # Afterwards only what node B had claimed and not recorded is sent again (at-least-once).
        again = [k for k, n in Counter(final).items() if n > 1]
        assert len(again) <= 2048 + 256, len(again)

        # Node B's ring timeouts fire on node A, once each.
        for server_call_id in calls:
            call = wait_for(lambda s=server_call_id: (c := a.get_call(s))["state"] == "disconnected" and c, 30)
            assert [t["event"] for t in call["timeline"]].count("ringTimeout") == 1, call["timeline"]
    finally:
        hook.close()


def test_a_node_started_again_sends_what_it_had_leased_at_once_and_leaves_the_other_nodes_leases(
    tmp_path: Path, callgrid_tls_dir: Path
) -> None:
    # Leases last the response time limit + 30 s: 150 s here, far longer than the test waits for anything (and
    # node B's POSTs, held unanswered, are not timed out and sent again meanwhile).
    url, schema = fresh_postgres_url("multinode")
    env = {"CALLGRID_DELIVERY_TIMEOUT_SECONDS": "120"}
    a, b = (
        CallgridServer(tmp_path / name, tls_dir=callgrid_tls_dir, clock="system", store=url, env=env)
        for name in ("node-a", "node-b")
    )
    gate = threading.Event()  # the app answers nothing until the end: every POST stays in flight
    seen: Counter[str] = Counter()  # event id: how many times it was sent
    lock = threading.Lock()

    def held(item: Received) -> tuple[int, Any]:
        with lock:
            seen.update(e["id"] for e in item.body)
        gate.wait(240)
        return 200, None

    def seen_now() -> Counter[str]:
        with lock:
            return Counter(seen)

    hook = WebhookReceiver(responder=held)
    try:
        a.start()
        topic = create_topic(a, "orders")
        sub = topic_subscription_url(a, "orders", "orders-app")
        assert put(a, sub, webhook_properties(hook.url)).status_code == 201
        assert wait_state(a, sub)["properties"]["provisioningState"] == "Succeeded"
        key = AzureKeyCredential(topic_key(a, "orders"))

        def publish(node: CallgridServer, ids: list[str]) -> None:
            client = EventGridPublisherClient(topic.endpoint.replace(str(a.port), str(node.port)), key)
            client.send(
                [EventGridEvent(subject="/o", event_type="Contoso.Order", data={}, data_version="1", id=i) for i in ids]
            )

        # Node A alone leases these and is sending them when it dies.
        a_leased = [f"a-{i}" for i in range(10)]
        publish(a, a_leased)
        wait_for(lambda: all(seen_now()[i] == 1 for i in a_leased), 30)
        b.start()
        a.kill()
        # Node B, alive, leases these and is sending them.
        b_leased = [f"b-{i}" for i in range(10)]
        publish(b, b_leased)
        wait_for(lambda: all(seen_now()[i] == 1 for i in b_leased), 30)

        # Node A starts again: what it had leased goes out again now, not when its leases end (150 s)...
        a.start()
        wait_for(lambda: all(seen_now()[i] == 2 for i in a_leased), 30)
        # ...and what node B is sending stays node B's: not sent a second time.
        assert [seen_now()[i] for i in b_leased] == [1] * 10
        gate.set()
    finally:
        gate.set()
        hook.close()
        for node in (a, b):
            node.stop()
        drop_schema(schema)
