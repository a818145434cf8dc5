"""Probation (eventgrid.md 4.5): an endpoint that keeps failing gets new deliveries delayed, not attempted."""

from __future__ import annotations

from callgrid.eventgrid.delivery.probation import Probation
from callgrid.eventgrid.events import parse_time
from tests.eventgrid.delivery.helpers import raise_incoming_calls, settled
from tests.support.arm import put_subscription
from tests.support.server import CallgridProcess
from tests.support.webhook import WebhookReceiver


def test_probation_starts_after_the_threshold_and_lasts_by_outcome() -> None:
    probation = Probation(failure_threshold=3)
    for _ in range(2):
        probation.record("http://a", False, "NotFound", 100.0)
    assert probation.until("http://a", 100.0) is None
    probation.record("http://a", False, "NotFound", 100.0)
    assert probation.until("http://a", 100.0) == 400.0  # NotFound: 5 minutes
    assert probation.until("http://a", 400.0) is None
    probation.record("http://a", True, "Succeeded", 401.0)
    probation.record("http://a", False, "Busy", 402.0)
    assert probation.until("http://a", 402.0) is None  # a success starts the count again


def test_a_failing_endpoint_delays_new_deliveries(fresh: CallgridProcess, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "sick-app", webhook.url)
    webhook.responder = lambda item: (503, None)  # Busy: 10 s of probation
    raise_incoming_calls(fresh, 10)
    failed = {r["id"] for r in settled(fresh)}
    start = fresh.client().request("GET", "/callgrid/v1/clock")["now"]
    assert len(webhook.notifications()) == 10  # unbatched: ten failed POSTs, the probation threshold

    webhook.responder = None
    raise_incoming_calls(fresh)
    (newest,) = [r for r in settled(fresh) if r["id"] not in failed]
    assert newest["attempts"] == 0  # not attempted: delayed until the probation ends
    assert len(webhook.notifications()) == 10
    assert abs((parse_time(newest["nextAttemptAt"]) or 0) - (start + 10)) < 0.01

    fresh.advance(10.5)
    (newest,) = [r for r in settled(fresh) if r["id"] == newest["id"]]
    assert newest["status"] == "delivered"
    assert newest["attempts"] == 1
