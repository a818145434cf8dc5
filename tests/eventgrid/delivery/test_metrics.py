"""`GET /metrics`: Event Grid's metrics (eventgrid.md 6.1) per topic and subscription, in Prometheus' text format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.eventgrid.delivery.helpers import DEAD_LETTER, raise_incoming_calls, settled
from tests.support.arm import put_subscription
from tests.support.server import CallgridProcess
from tests.support.webhook import WebhookReceiver

_SAMPLE = re.compile(r"^([a-z_]+)(\{.*\})? (\S+)$")


def scrape(server: CallgridProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
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
    fresh: CallgridProcess, webhook: WebhookReceiver
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
    tmp_path_factory: pytest.TempPathFactory, shared_tls: Path, callgrid: CallgridProcess
) -> None:
    server = CallgridProcess(tmp_path_factory.mktemp("metrics-restart"), tls_dir=shared_tls).start()
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
