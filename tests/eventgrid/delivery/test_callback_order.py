"""Call Automation callbacks to one app go out in the order raised; one the app has not answered yet holds
the next ones back only briefly (DeliverySettings.callback_hold_seconds), and is not sent again if its
answer never comes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from callgrid.testing import CallgridServer, Received, WebhookReceiver
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, make_world


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def _type(item: Received) -> str:
    body = item.body
    return str(body[0].get("type", "")) if isinstance(body, list) and body and isinstance(body[0], dict) else ""


@pytest.fixture
def connected_held(world: World) -> Iterator[World]:
    """The app keeps CallConnected's request open (up to 60 s; some apps never answer it), and answers the
    rest at once."""
    release = threading.Event()

    def hold_connected(item: Received) -> tuple[int, Any]:
        if _type(item) == "Microsoft.Communication.CallConnected":
            release.wait(60)
        return 200, None

    world.webhook.responder = hold_connected
    yield world
    release.set()


def _answered(world: World) -> str:
    world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    ccid = world.automation.answer_call(context, world.callback_url).call_connection_id
    assert ccid is not None
    return ccid


def test_a_callback_left_unanswered_does_not_hold_up_the_calls_next_events(connected_held: World) -> None:
    # An app that keeps CallConnected's request open while it works still hears ParticipantsUpdated in time
    # to act on it, and after CallConnected.
    world = connected_held
    ccid = _answered(world)
    assert world.callback_types(ccid, 2) == ["CallConnected", "ParticipantsUpdated"]
    arrived = [_type(r) for r in world.callback_requests()]
    assert arrived.index("Microsoft.Communication.CallConnected") < arrived.index(
        "Microsoft.Communication.ParticipantsUpdated"
    )


def test_callbacks_answered_at_once_keep_their_order(world: World) -> None:
    ccid = _answered(world)
    world.callbacks(ccid, 2)
    world.automation.get_call_connection(ccid).hang_up(is_for_everyone=True)
    world.callbacks(ccid, 3)
    arrived = [_type(r).removeprefix("Microsoft.Communication.") for r in world.callback_requests()]
    assert arrived == ["CallConnected", "ParticipantsUpdated", "CallDisconnected"]


def test_a_callback_never_answered_is_not_sent_again(connected_held: World) -> None:
    # The app took the request in: a second CallConnected would have it set the call up twice.
    world = connected_held
    ccid = _answered(world)
    world.callbacks(ccid, 2)
    world.server.advance(31)  # past the response time limit
    deliveries = world.client.request("GET", "/callgrid/v1/deliveries?limit=20")
    connected = [d for d in deliveries["value"] if d["kind"] == "callback" and d["status"] == "dropped"]
    assert [d["reason"] for d in connected] == ["CallbackNotAnswered"]
    world.server.advance(120)  # past any retry schedule
    arrived = [_type(r) for r in world.callback_requests()]
    assert arrived.count("Microsoft.Communication.CallConnected") == 1
