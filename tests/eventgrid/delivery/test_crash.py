"""At-least-once across a crash: SIGKILL the server with 10,000 events in flight, restart, lose nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.eventgrid.delivery.helpers import deliveries, wait_for
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.eventgrid.rest import put, topic_subscription_url, wait_state, webhook_properties

EVENTS = 10_000


@pytest.fixture
def crashable(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, callgrid: CallgridServer
) -> Iterator[CallgridServer]:
    server = CallgridServer(tmp_path_factory.mktemp("crash"), tls_dir=callgrid_tls_dir).start()
    yield server
    server.stop()


def test_every_event_is_delivered_after_a_sigkill(crashable: CallgridServer) -> None:
    seen: set[str] = set()
    lock = threading.Lock()

    def slowish(item: Received) -> tuple[int, Any]:
        time.sleep(0.005)
        with lock:
            seen.update(e["id"] for e in item.body)
        return 200, None

    hook = WebhookReceiver(responder=slowish)
    try:
        topic = create_topic(crashable, "crash-orders")
        url = topic_subscription_url(crashable, "crash-orders", "crash-app")
        assert put(crashable, url, webhook_properties(hook.url)).status_code == 201
        assert wait_state(crashable, url)["properties"]["provisioningState"] == "Succeeded"
        publisher = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(crashable, "crash-orders")))
        for start in range(0, EVENTS, 1000):
            publisher.send(
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
        # Every event is acknowledged (durable); most are still on their way.
        with lock:
            before = len(seen)
        assert before < EVENTS
        crashable.restart(hard=True)

        progress = {"count": -1, "since": time.monotonic()}

        def all_seen() -> bool:
            with lock:
                count = len(seen)
            if count != progress["count"]:
                progress.update(count=count, since=time.monotonic())
            elif time.monotonic() - progress["since"] > 1.0:
                # Stalled: whatever failed around the crash waits for its retry on the virtual clock.
                crashable.advance(60)
                progress["since"] = time.monotonic()
            return count == EVENTS

        wait_for(all_seen, timeout=120)
        assert seen == {f"order-{i}" for i in range(EVENTS)}

        def none_pending() -> bool:
            if deliveries(crashable, status="pending", limit=10):
                crashable.advance(60)
                return False
            return True

        wait_for(none_pending, timeout=60)
    finally:
        hook.close()
