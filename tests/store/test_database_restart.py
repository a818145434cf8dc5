"""The database restarted under load: requests during the outage get 503 in ACS's shape, the node
reconnects by itself, and every event it acknowledged is delivered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from callgrid.client import CallgridHttpError
from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.eventgrid.delivery.helpers import wait_for
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.eventgrid.rest import put, topic_subscription_url, wait_state, webhook_properties
from tests.support.postgres import PrivatePostgres

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


@pytest.fixture
def database() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.close()


def test_a_database_restart_under_load_loses_nothing_acknowledged(
    database: PrivatePostgres, tmp_path: Path, callgrid_tls_dir: Path
) -> None:
    node = CallgridServer(
        tmp_path / "node", tls_dir=callgrid_tls_dir, clock="system", store=database.url + "?pool_timeout=2"
    ).start()
    received: set[str] = set()
    lock = threading.Lock()

    def record(item: Received) -> tuple[int, Any]:
        with lock:
            received.update(e["id"] for e in item.body)
        return 200, None

    hook = WebhookReceiver(responder=record)
    acknowledged: list[str] = []
    refusals: list[int | None] = []
    stop = threading.Event()
    try:
        topic = create_topic(node, "orders")
        url = topic_subscription_url(node, "orders", "orders-app")
        assert put(node, url, webhook_properties(hook.url)).status_code == 201
        assert wait_state(node, url)["properties"]["provisioningState"] == "Succeeded"
        # No retries: the test sees each 503 itself (an SDK's default policy would retry it).
        publisher = EventGridPublisherClient(
            topic.endpoint, AzureKeyCredential(topic_key(node, "orders")), retry_total=0
        )

        def publish() -> None:
            n = 0
            while not stop.is_set():
                batch = [f"e-{n + i}" for i in range(20)]
                n += 20
                try:
                    publisher.send(
                        [EventGridEvent(subject="/o", event_type="T", data={}, data_version="1", id=i) for i in batch]
                    )
                except HttpResponseError as exc:
                    refusals.append(exc.status_code)
                    time.sleep(0.05)
                    continue
                acknowledged.extend(batch)

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        wait_for(lambda: len(acknowledged) >= 200, timeout=30)

        database.stop()
        # During the outage: 503 ServiceUnavailable in ACS's error shape, not a 500, not a hang.
        with pytest.raises(CallgridHttpError) as refused:
            node.client().request("GET", "/callgrid/v1/calls")
        assert refused.value.status == 503
        assert refused.value.code == "ServiceUnavailable"
        time.sleep(1.0)
        database.start()

        during = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= during + 200, timeout=60)  # reconnected by itself
        stop.set()
        thread.join(30)
        # What was refused was refused as unavailable (retryable), never as a failure of the request.
        assert set(refusals) <= {503}, refusals

        def all_delivered() -> bool:
            with lock:
                return received >= set(acknowledged)

        wait_for(all_delivered, timeout=120)
        assert node.client().request("GET", "/callgrid/v1/calls") is not None
    finally:
        stop.set()
        hook.close()
        node.stop()
