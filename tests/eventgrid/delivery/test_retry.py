"""Success, failure and retry (eventgrid.md 4.5), end to end on the virtual clock."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.eventgrid.delivery.helpers import (
    DEAD_LETTER,
    attempt_offsets,
    deliveries,
    raise_incoming_calls,
    run_to_end,
    settled,
    wait_for,
)
from tests.support.arm import put_subscription


def failing(times: int, status: int = 500) -> Any:
    calls = {"n": 0}

    def respond(item: Received) -> tuple[int, Any]:
        calls["n"] += 1
        return (status, None) if calls["n"] <= times else (200, None)

    return respond


def within(offsets: list[float], schedule: list[float]) -> bool:
    """Each gap is its scheduled delay plus at most 10 % jitter."""
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    return len(gaps) == len(schedule) and all(s <= g <= s * 1.1 + 0.01 for g, s in zip(gaps, schedule, strict=True))


def test_failing_webhook_is_retried_on_azures_schedule_until_it_succeeds(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    put_subscription(fresh, "flaky-app", webhook.url)
    webhook.responder = failing(4)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    row = run_to_end(fresh, row["id"])

    assert row["status"] == "delivered"
    assert row["attempts"] == 5
    assert within(attempt_offsets(row), [10, 30, 60, 300])
    assert [a["status"] for a in row["history"]] == [500, 500, 500, 500, 200]
    assert [a["outcome"] for a in row["history"]][:4] == ["GenericError"] * 4
    counts = [r.header("aeg-delivery-count") for r in webhook.notifications()]
    assert counts == ["0", "1", "2", "3", "4"]
    ids = {r.body[0]["id"] for r in webhook.notifications()}
    assert len(ids) == 1  # the same event every time


@pytest.mark.parametrize(
    ("status", "outcome"), [(400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (413, "PayloadTooLarge")]
)
def test_webhook_statuses_that_are_never_retried(
    fresh: CallgridServer, webhook: WebhookReceiver, status: int, outcome: str
) -> None:
    put_subscription(fresh, "picky-app", webhook.url)
    webhook.responder = lambda item: (status, {"error": "no"})
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    assert row["status"] == "dropped"  # no dead-letter destination: dropped, as in Azure
    assert row["reason"] == f"UndeliverableDueToHttp{outcome}"
    assert row["attempts"] == 1
    assert row["lastOutcome"] == outcome
    fresh.advance(86400)
    assert settled(fresh)[0]["attempts"] == 1
    assert len(webhook.notifications()) == 1


@pytest.mark.parametrize(("status", "minimum"), [(408, 120.0), (503, 30.0), (429, 10.0), (404, 10.0), (502, 10.0)])
def test_retried_statuses_wait_their_minimum_delay(
    fresh: CallgridServer, webhook: WebhookReceiver, status: int, minimum: float
) -> None:
    put_subscription(fresh, "busy-app", webhook.url)
    webhook.responder = failing(1, status)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    row = run_to_end(fresh, row["id"])
    assert row["status"] == "delivered"
    assert within(attempt_offsets(row), [minimum])


def test_success_is_only_200_to_204(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "odd-app", webhook.url)
    answers = iter([205, 302, 204])
    webhook.responder = lambda item: (next(answers), None)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    row = run_to_end(fresh, row["id"])
    assert [a["status"] for a in row["history"]] == [205, 302, 204]
    assert row["status"] == "delivered"


def test_max_attempts_then_dead_letter(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        fresh,
        "down-app",
        webhook.url,
        properties={
            "retryPolicy": {"maxDeliveryAttempts": 3, "eventTimeToLiveInMinutes": 1440},
            "deadLetterDestination": DEAD_LETTER,
        },
    )
    webhook.responder = lambda item: (500, None)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    row = run_to_end(fresh, row["id"])
    assert row["status"] == "deadLettered"
    assert row["reason"] == "MaxDeliveryAttemptsExceeded"
    assert row["attempts"] == 3
    assert within(attempt_offsets(row), [10, 30])


def test_ttl_is_noticed_when_the_next_attempt_falls_due(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    # eventgrid.md 4.5's worked example: TTL 30 min, max 10 -> 6 attempts, dead-lettered at ~46m40s.
    put_subscription(
        fresh,
        "slow-death",
        webhook.url,
        properties={
            "retryPolicy": {"maxDeliveryAttempts": 10, "eventTimeToLiveInMinutes": 30},
            "deadLetterDestination": DEAD_LETTER,
        },
    )
    webhook.responder = lambda item: (500, None)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    row = run_to_end(fresh, row["id"])
    assert row["status"] == "deadLettered"
    assert row["reason"] == "TimeToLiveExceeded"
    assert row["attempts"] == 6
    assert within(attempt_offsets(row), [10, 30, 60, 300, 600])
    (letter,) = fresh.client().dead_letters()["value"]
    dead_at = letter["deadLetteredAt"]
    assert letter["event"]["deliveryAttempts"] == 6
    assert dead_at > row["history"][-1]["startedAt"]


def hanging_first(release: threading.Event, status: int = 200) -> Any:
    """The first request waits for `release` (real time), then answers `status`; later ones get 200 at once."""
    calls = {"n": 0}

    def respond(item: Received) -> tuple[int, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            release.wait(20)
            return status, None
        return 200, None

    return respond


def slow_first_answer(
    server: CallgridServer, webhook: WebhookReceiver, name: str, status: int = 200
) -> threading.Event:
    """A subscription whose webhook holds its first request until the returned event is set."""
    put_subscription(server, name, webhook.url)
    release = threading.Event()
    webhook.responder = hanging_first(release, status)
    return release


def timed_out_first_attempt(server: CallgridServer) -> dict[str, Any]:
    raise_incoming_calls(server)
    # The engine claims the first attempt just after the event is stored (on PostgreSQL, after a NOTIFY).
    assert wait_for(lambda: [r["inFlight"] for r in deliveries(server)] == [True])
    server.advance(29)
    assert deliveries(server)[0]["inFlight"]
    server.advance(2)  # past the 30 s response limit, on the virtual clock
    (row,) = settled(server)
    assert row["status"] == "pending"
    assert row["history"][0]["outcome"] == "TimedOut"
    assert row["history"][0]["status"] is None
    return row


def test_no_answer_within_the_response_timeout_is_a_timed_out_attempt(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    release = slow_first_answer(fresh, webhook, "hanging-app")
    try:
        row = timed_out_first_attempt(fresh)
        row = run_to_end(fresh, row["id"])
    finally:
        release.set()  # answers the first request only after its retry succeeded: nothing changes
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert within(attempt_offsets(row), [30 + 10])  # timed out at its 30 s limit, retried 10 s later
    assert wait_for(lambda: len(webhook.notifications()) == 2)
    assert deliveries(fresh)[0]["history"][0]["outcome"] == "TimedOut"


def test_a_late_success_within_three_minutes_cancels_the_queued_retry(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    release = slow_first_answer(fresh, webhook, "slow-app")
    try:
        row = timed_out_first_attempt(fresh)
    finally:
        release.set()  # the webhook answers 200, 31 s after the request on the virtual clock
    row = wait_for(lambda: next((r for r in deliveries(fresh) if r["status"] == "delivered"), None))
    assert row["attempts"] == 1
    assert row["lastOutcome"] == "Succeeded"
    assert row["history"][0]["outcome"] == "TimedOut"
    assert row["history"][0]["status"] == 200
    assert "retry was cancelled" in row["history"][0]["error"]
    fresh.advance(600)  # well past when the retry was due
    (row,) = settled(fresh)
    assert row["status"] == "delivered"
    assert len(webhook.notifications()) == 1


def test_a_late_failure_leaves_the_retry_in_place(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    release = slow_first_answer(fresh, webhook, "slow-failing-app", status=500)
    try:
        row = timed_out_first_attempt(fresh)
    finally:
        release.set()
    time.sleep(0.5)  # the late 500 reaches the engine in milliseconds; it must not settle anything
    assert deliveries(fresh)[0]["status"] == "pending"
    row = run_to_end(fresh, row["id"])
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert [a["outcome"] for a in row["history"]] == ["TimedOut", "Succeeded"]
