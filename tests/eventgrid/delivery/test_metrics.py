"""`GET /metrics`: Event Grid's metrics (eventgrid.md 6.1) per topic and subscription, in Prometheus' text format."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import requests

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.delivery.helpers import DEAD_LETTER, deliveries, raise_incoming_calls, settled, wait_for
from tests.support.arm import put_subscription

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")  # Prometheus metric names


def scrape(server: CallgridServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = requests.get(server.endpoint + "/metrics", verify=server.ca_bundle)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


def test_metrics_count_what_happened_per_topic_and_subscription(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    failing = WebhookReceiver(responder=lambda item: (400, None))
    try:
        put_subscription(fresh, "good-app", webhook.url)
        put_subscription(fresh, "bad-app", failing.url, properties={"deadLetterDestination": DEAD_LETTER})
        put_subscription(fresh, "dropping-app", failing.url + "/drop")
        raise_incoming_calls(fresh, 3)
        settled(fresh)
    finally:
        failing.close()
    topic = fresh.resource_id.lower()
    samples = scrape(fresh)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset({"topic": topic, **labels}.items())), 0.0)

    assert value("eventgrid_publish_success_count") == 3
    assert value("eventgrid_matched_event_count", event_subscription_name="GOOD-APP") == 3
    assert value("eventgrid_delivery_success_count", event_subscription_name="GOOD-APP") == 3
    assert value("eventgrid_delivery_success_count", event_subscription_name="BAD-APP") == 0
    assert (
        value(
            "eventgrid_dead_lettered_count",
            event_subscription_name="BAD-APP",
            dead_letter_reason="UndeliverableDueToHttpBadRequest",
        )
        == 3
    )
    assert (
        value(
            "eventgrid_dropped_event_count",
            event_subscription_name="DROPPING-APP",
            drop_reason="UndeliverableDueToHttpBadRequest",
        )
        == 3
    )
    assert (
        value("eventgrid_delivery_attempt_fail_count", event_subscription_name="BAD-APP", error_type="BadRequest") == 3
    )
    assert value("eventgrid_destination_processing_duration_ms_count", event_subscription_name="GOOD-APP") == 3
    assert value("eventgrid_delivery_latency_seconds_count", event_subscription_name="GOOD-APP") == 3
    assert value("eventgrid_delivery_latency_seconds_bucket", event_subscription_name="GOOD-APP", le="+Inf") == 3


def test_metrics_survive_a_restart(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, callgrid: CallgridServer
) -> None:
    server = CallgridServer(tmp_path_factory.mktemp("metrics-restart"), tls_dir=callgrid_tls_dir).start()
    hook = WebhookReceiver()
    try:
        put_subscription(server, "kept-app", hook.url)
        raise_incoming_calls(server, 2)
        settled(server)
        server.restart(hard=True)
        samples = scrape(server)
    finally:
        hook.close()
        server.stop()
    topic = server.resource_id.lower()
    key = (
        "eventgrid_delivery_success_count",
        frozenset({"topic": topic, "event_subscription_name": "KEPT-APP"}.items()),
    )
    assert samples[key] == 2


def test_publish_metrics_of_a_custom_topic(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import ClientAuthenticationError
    from azure.eventgrid import EventGridEvent, EventGridPublisherClient

    from tests.eventgrid.mgmt import create_topic, topic_key
    from tests.eventgrid.test_custom_topic_publish import subscribe

    topic = create_topic(fresh, "metered")
    subscribe(fresh, "metered", "red-only", webhook.url, filter={"subjectBeginsWith": "/red"})
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(fresh, "metered")))
    client.send(
        [
            EventGridEvent(subject=subject, event_type="Contoso.Paint", data={}, data_version="1")
            for subject in ("/red/1", "/red/2", "/blue/1")
        ]
    )
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.endpoint, AzureKeyCredential("d3Jvbmc=")).send(
            [EventGridEvent(subject="/red/3", event_type="Contoso.Paint", data={}, data_version="1")] * 2
        )
    webhook.wait_until(lambda: len(webhook.events("Contoso.Paint")) == 2)
    samples = scrape(fresh)
    t = topic.id.lower()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset({"topic": t, **labels}.items())), 0.0)

    assert value("eventgrid_publish_success_count") == 3
    assert value("eventgrid_matched_event_count", event_subscription_name="RED-ONLY") == 2
    assert value("eventgrid_unmatched_event_count") == 1
    # Refused before its body is read, so its two events are never counted: one failed request, one event.
    assert value("eventgrid_publish_fail_count", error_type="Unauthorized") == 1
    assert value("eventgrid_publish_success_latency_in_ms") > 0


def test_retention_purges_ended_deliveries_but_keeps_counts_and_dead_letters(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    failing = WebhookReceiver(responder=lambda item: (400, None))
    try:
        put_subscription(fresh, "kept-app", webhook.url)
        put_subscription(fresh, "dead-app", failing.url, properties={"deadLetterDestination": DEAD_LETTER})
        raise_incoming_calls(fresh, 2)
        rows = settled(fresh)
    finally:
        failing.close()
    assert sorted(r["status"] for r in rows) == ["deadLettered", "deadLettered", "delivered", "delivered"]
    fresh.advance(23 * 3600)  # within the default 24 h: nothing is purged yet
    assert len(settled(fresh)) == 4
    fresh.advance(3600 + 120)
    remaining = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(deliveries(fresh)))
    assert {r["status"] for r in remaining} == {"deadLettered"}
    # A dead letter outlives retention and can still be replayed.
    dead = fresh.client().request("GET", "/callgrid/v1/deadLetters")["value"]
    assert len(dead) == 2
    fresh.client().request("POST", f"/callgrid/v1/deadLetters/{dead[0]['id']}:replay")
    # The counters are not the rows: what happened is still counted.
    samples = scrape(fresh)
    topic = fresh.resource_id.lower()
    key = (
        "eventgrid_delivery_success_count",
        frozenset({"topic": topic, "event_subscription_name": "KEPT-APP"}.items()),
    )
    assert samples[key] == 2
    # The purged events are gone from the store too (read from the store, beside the running server).
    assert _stored_events(fresh) == 2  # the dead-lettered calls' events


def _stored_events(server: CallgridServer) -> int:
    if server.store is None:
        with sqlite3.connect(f"file:{server.data_dir / 'callgrid.db'}?mode=ro", uri=True) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)
    import psycopg
    from psycopg import sql

    from callgrid.testing.stores import postgres_url

    schema = server.store.split("schema=")[1].split("&")[0]
    with psycopg.connect(postgres_url()) as conn:
        row = conn.execute(sql.SQL("SELECT COUNT(*) FROM {}.events").format(sql.Identifier(schema))).fetchone()
    assert row is not None
    return int(row[0])
