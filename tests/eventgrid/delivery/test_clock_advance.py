"""One long advance of the virtual clock plays the time as it would pass: every retry at its own time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgrid.eventgrid.events import parse_time
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.delivery.helpers import deliveries, raise_incoming_calls, settled
from tests.support.arm import put_subscription

HOUR = 3600.0


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    """Retry delays without jitter, so two runs of one schedule can be compared to the millisecond."""
    server = CallgridServer(
        tmp_path_factory.mktemp("exact-retries"), tls_dir=callgrid_tls_dir, env={"CALLGRID_RETRY_JITTER": "0"}
    ).start()
    yield server
    server.stop()


def failing_hour(server: CallgridServer, webhook: WebhookReceiver, steps: list[float]) -> list[dict[str, Any]]:
    """Subscribe a webhook that always answers 500, raise one event, move the clock by `steps`;
    returns the attempts' (offset from the first, aeg-delivery-count, status)."""
    server.reset()
    put_subscription(server, "down-app", webhook.url)
    webhook.responder = lambda item: (500, None)
    raise_incoming_calls(server)
    (row,) = settled(server)
    for seconds in steps:
        server.advance(seconds)
    (row,) = deliveries(server)
    assert not row["inFlight"]
    started = [parse_time(a["startedAt"]) or 0.0 for a in row["history"]]
    counts = [r.header("aeg-delivery-count") for r in webhook.notifications()]
    return [
        {"offset": round(t - started[0], 3), "count": c, "status": a["status"]}
        for t, c, a in zip(started, counts, row["history"], strict=True)
    ]


def test_one_hour_in_one_jump_is_the_same_hour_as_in_five_minute_steps(exact: CallgridServer) -> None:
    one_jump = WebhookReceiver()
    stepped = WebhookReceiver()
    try:
        jumped = failing_hour(exact, one_jump, [HOUR])
        walked = failing_hour(exact, stepped, [300.0] * 12)
    finally:
        one_jump.close()
        stepped.close()
    # Azure's schedule: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min (the next, 1 h later, is past the hour).
    assert [a["offset"] for a in jumped] == [0, 10, 40, 100, 400, 1000, 2800]
    assert [a["count"] for a in jumped] == ["0", "1", "2", "3", "4", "5", "6"]
    assert all(a["status"] == 500 for a in jumped)
    assert jumped == walked


def test_a_day_in_one_jump_retries_to_the_end_and_drops_the_event(exact: CallgridServer) -> None:
    webhook = WebhookReceiver()
    try:
        exact.reset()
        put_subscription(exact, "gone-app", webhook.url, properties={"retryPolicy": {"maxDeliveryAttempts": 10}})
        webhook.responder = lambda item: (500, None)
        raise_incoming_calls(exact)
        settled(exact)
        exact.advance(86400)
        (row,) = deliveries(exact)
    finally:
        webhook.close()
    assert row["status"] == "dropped"
    assert row["reason"] == "MaxDeliveryAttemptsExceeded"
    assert row["attempts"] == 10
    assert len(webhook.notifications()) == 10
