"""Output batching (eventgrid.md 4.4): ceilings, the size target, and all-or-none retries."""

from __future__ import annotations

import math
from typing import Any

from callgrid.eventgrid.delivery.batching import plan_batches
from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.eventgrid.delivery.helpers import raise_incoming_calls, settled
from tests.support.arm import put_subscription


def test_plan_respects_the_event_ceiling() -> None:
    items = [(i, 10) for i in range(25)]
    assert [len(b) for b in plan_batches(items, 10, 10_000)] == [10, 10, 5]


def test_plan_respects_the_size_target_counting_json_framing() -> None:
    # [a,b] is 2 + 10 + 1 + 10 = 23 bytes; a third event would make 34.
    items = [(i, 10) for i in range(5)]
    assert plan_batches(items, 100, 33) == [[0, 1], [2, 3], [4]]
    assert plan_batches(items, 100, 34) == [[0, 1, 2], [3, 4]]


def test_an_event_larger_than_the_target_goes_alone() -> None:
    assert plan_batches([("a", 5), ("big", 5000), ("b", 5)], 10, 1024) == [["a"], ["big"], ["b"]]


def test_plan_keeps_order_and_loses_nothing() -> None:
    items = [(i, (i * 37) % 300 + 1) for i in range(200)]
    batches = plan_batches(items, 7, 900)
    assert [x for b in batches for x in b] == list(range(200))
    for batch in batches:
        assert len(batch) <= 7
        size = sum(s for i, s in items if i in batch) + len(batch) + 1
        assert size <= 900 or len(batch) == 1


def fail_first_attempts(item: Received) -> tuple[int, Any]:
    return (500, None) if item.header("aeg-delivery-count") == "0" else (200, None)


def _accumulate(server: CallgridServer, webhook: WebhookReceiver, count: int) -> None:
    """Publish `count` events whose first attempts fail, so the retries all fall due together."""
    webhook.responder = fail_first_attempts
    raise_incoming_calls(server, count)
    settled(server)
    server.advance(12)  # past every first retry, all due 10 s after the first attempts (no jitter)
    settled(server)


def test_due_events_go_in_batches_of_max_events(quiet: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        quiet,
        "batched-app",
        webhook.url,
        properties={
            "destination": {
                "endpointType": "WebHook",
                "properties": {
                    "endpointUrl": webhook.url,
                    "maxEventsPerBatch": 10,
                    "preferredBatchSizeInKilobytes": 1024,
                },
            }
        },
    )
    _accumulate(quiet, webhook, 25)
    retries = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "1"]
    assert len(retries) == math.ceil(25 / 10)
    assert sorted(len(r.body) for r in retries) == [5, 10, 10]
    assert all(r.header("Content-Type") == "application/json; charset=utf-8" for r in retries)
    delivered = {e["id"] for r in retries for e in r.body}
    assert len(delivered) == 25
    assert all(r["status"] == "delivered" and r["attempts"] == 2 for r in settled(quiet))


def test_batches_stay_under_the_preferred_size(quiet: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        quiet,
        "sized-app",
        webhook.url,
        properties={
            "destination": {
                "endpointType": "WebHook",
                "properties": {
                    "endpointUrl": webhook.url,
                    "maxEventsPerBatch": 100,
                    "preferredBatchSizeInKilobytes": 4,
                },
            }
        },
    )
    _accumulate(quiet, webhook, 12)
    retries = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "1"]
    one_event = len(retries[0].raw) if len(retries[0].body) == 1 else len(retries[0].raw) // len(retries[0].body)
    assert one_event < 4096 // 2  # several IncomingCall events fit in 4 KB
    assert 1 < len(retries) < 12
    assert all(len(r.raw) <= 4096 for r in retries)
    assert sum(len(r.body) for r in retries) == 12


def test_an_oversized_event_is_sent_alone(quiet: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        quiet,
        "tiny-app",
        webhook.url,
        properties={
            "destination": {
                "endpointType": "WebHook",
                "properties": {"endpointUrl": webhook.url, "maxEventsPerBatch": 50, "preferredBatchSizeInKilobytes": 1},
            }
        },
    )
    _accumulate(quiet, webhook, 3)
    retries = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "1"]
    assert len(retries[0].raw) > 1024  # an IncomingCall event is bigger than 1 KB
    assert [len(r.body) for r in retries] == [1, 1, 1]


def test_a_failed_batch_is_retried_whole(quiet: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        quiet,
        "whole-app",
        webhook.url,
        properties={
            "destination": {
                "endpointType": "WebHook",
                "properties": {"endpointUrl": webhook.url, "maxEventsPerBatch": 20},
            }
        },
    )
    answers = {"1": 503, "2": 200}
    webhook.responder = lambda item: (answers.get(item.header("aeg-delivery-count") or "", 500), None)
    raise_incoming_calls(quiet, 6)
    settled(quiet)
    quiet.advance(12)
    settled(quiet)
    (batch,) = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "1"]
    assert len(batch.body) == 6
    rows = settled(quiet)
    assert {r["status"] for r in rows} == {"pending"}
    assert len({r["nextAttemptAt"] for r in rows}) == 1  # one delay for the whole batch
    quiet.advance(34)  # 503: at least 30 s
    rows = settled(quiet)
    assert {r["status"] for r in rows} == {"delivered"}
    (second,) = [r for r in webhook.notifications() if r.header("aeg-delivery-count") == "2"]
    assert {e["id"] for e in second.body} == {e["id"] for e in batch.body}
