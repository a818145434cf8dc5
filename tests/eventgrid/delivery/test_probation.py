"""Probation (eventgrid.md 4.5): an endpoint that keeps failing gets new deliveries delayed, not attempted."""

from __future__ import annotations

from callgrid.eventgrid.delivery.probation import Probation
from callgrid.eventgrid.events import parse_time
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.delivery.helpers import DEAD_LETTER, raise_incoming_calls, settled, wait_for
from tests.support.arm import put_subscription


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


def test_a_failing_endpoint_delays_new_deliveries(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
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


def test_events_whose_time_to_live_ends_during_probation_are_dead_lettered_without_an_attempt(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    put_subscription(
        fresh,
        "gone-app",
        webhook.url,
        properties={
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1},
            "deadLetterDestination": DEAD_LETTER,
        },
    )
    webhook.responder = lambda item: (404, None)  # NotFound: 5 minutes of probation, longer than the TTL
    raise_incoming_calls(fresh, 10)
    failed = settled(fresh)
    assert all(r["attempts"] == 1 and r["status"] == "pending" for r in failed)
    assert len(webhook.notifications()) == 10

    webhook.responder = None
    raise_incoming_calls(fresh)
    newest = wait_for(lambda: [r for r in settled(fresh) if r["status"] == "deadLettered"])
    assert [r["attempts"] for r in newest] == [0]
    assert newest[0]["reason"] == "UndeliverableDueToProbationCausedByClientError"
    assert newest[0]["lastOutcome"] == "Probation"
    # The ten that failed meet the same end when their retry falls due (10 s + jitter), still on probation.
    fresh.advance(11.5)
    rows = wait_for(lambda: (lambda r: r if all(x["status"] == "deadLettered" for x in r) else None)(settled(fresh)))
    assert len(rows) == 11
    assert len(webhook.notifications()) == 10  # nothing more was attempted
    letters = fresh.client().request("GET", "/callgrid/v1/deadLetters")["value"]
    items = [d["event"] for d in letters]
    assert {i["deadLetterReason"] for i in items} == {"UndeliverableDueToProbationCausedByClientError"}
    assert {i["lastDeliveryOutcome"] for i in items} == {"Probation"}
    assert sorted(i["deliveryAttempts"] for i in items) == [0] + [1] * 10


def test_events_that_outlive_the_probation_wait_for_it(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "patient-app", webhook.url, properties={"retryPolicy": {"eventTimeToLiveInMinutes": 10}})
    webhook.responder = lambda item: (404, None)
    raise_incoming_calls(fresh, 10)
    failed = {r["id"] for r in settled(fresh)}
    webhook.responder = None
    raise_incoming_calls(fresh)
    (newest,) = [r for r in settled(fresh) if r["id"] not in failed]
    assert newest["status"] == "pending" and newest["attempts"] == 0
    fresh.advance(300.5)
    (newest,) = [r for r in settled(fresh) if r["id"] == newest["id"]]
    assert newest["status"] == "delivered"
