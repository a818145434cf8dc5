"""A webhook that hangs delays only its own deliveries: each destination has its own bounded share of the
engine's in-flight slots and of the sender's connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.eventgrid.delivery.helpers import raise_incoming_calls
from tests.support.arm import put_subscription

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

CALLS = 300  # more than the engine's 256 in-flight slots


@pytest.fixture
def hanging() -> Iterator[WebhookReceiver]:
    release = threading.Event()

    def hang(item: Received) -> tuple[int, Any]:
        release.wait(120)
        return 200, None

    receiver = WebhookReceiver(responder=hang)
    yield receiver
    release.set()
    receiver.close()


def test_a_hanging_webhook_does_not_stall_a_healthy_one(
    quiet: CallgridServer, webhook: WebhookReceiver, hanging: WebhookReceiver
) -> None:
    put_subscription(quiet, "healthy", webhook.url)
    put_subscription(quiet, "hanging", hanging.url)
    began = time.monotonic()
    raise_incoming_calls(quiet, CALLS)
    webhook.wait_until(lambda: len(webhook.events()) >= CALLS, timeout=30)
    first_round = time.monotonic() - began
    assert len(hanging.notifications()) <= 64  # its own share, not every slot

    # Retry rounds: the hanging one's requests time out and go out again; the healthy one is not held up.
    for round_ in range(2):
        quiet.advance(31 + 60 * round_)
        began = time.monotonic()
        raise_incoming_calls(quiet, 20)
        webhook.wait_until(lambda n=round_: len(webhook.events()) >= CALLS + 20 * (n + 1), timeout=15)
        assert time.monotonic() - began < 15
    assert first_round < 30
