"""What waits in the delivery engine's memory for one of its slots counts as delivery lag: claimed rows
are leased while they wait, so the store's due rows do not show them; the engine says since when its
oldest has waited (the throttle adds it, api/throttle.py), and nothing once all are sent. What waits behind
its own destination (an earlier callback to the same app) is that app's backlog and does not count."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callgrid.clock import SystemClock
from callgrid.config import Settings
from callgrid.eventgrid.delivery.engine import DeliveryEngine, DeliverySettings
from callgrid.eventgrid.delivery.sender import SendResult
from callgrid.eventgrid.events import event_grid_event
from callgrid.eventgrid.topics import EventPublisher, SubscriptionTable
from callgrid.node import Node
from callgrid.store import Store, open_store
from callgrid.testing import WebhookReceiver

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

SUBSCRIPTION_TYPE = "Microsoft.EventGrid/eventSubscriptions"


class _HeldSender:
    """The network, held: each POST is recorded, then answered 200 once `release` is set."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.release = asyncio.Event()

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        self.urls.append(url)
        await self.release.wait()
        return SendResult(200, "Succeeded")

    async def close(self) -> None:
        return None


async def _until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within time")


@contextlib.asynccontextmanager
async def _engine(tmp_path: Path, slots: int) -> AsyncIterator[tuple[Store, DeliveryEngine, _HeldSender]]:
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    sender = _HeldSender()
    engine = DeliveryEngine(
        store=store,
        clock=SystemClock(),
        sender=sender,
        callback_authorization=lambda audience: "Bearer x",
        settings=DeliverySettings(max_in_flight=slots),
    )
    task = asyncio.create_task(engine.run_forever())
    try:
        yield store, engine, sender
    finally:
        sender.release.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def _callbacks(store: Store, engine: DeliveryEngine, urls: list[str], *, handed: bool = False) -> None:
    """Raise one callback per URL in one transaction: claimed by the engine, or (`handed`) inserted leased to
    it and handed over after the commit, as a node's own publisher does."""
    publisher = EventPublisher(SystemClock(), SubscriptionTable(), engine.wake, engine=engine if handed else None)
    async with store.transaction() as tx:
        for n, url in enumerate(urls):
            event = {"id": f"cb-{n}", "source": "calling/x", "type": "CallConnected", "data": {}}
            await publisher.send_callback(tx, url=url, event=event)


@pytest.mark.parametrize("handed", [False, True], ids=["claimed", "handed-over"])
async def test_requests_waiting_for_a_slot_say_since_when_until_sent(tmp_path: Path, handed: bool) -> None:
    async with _engine(tmp_path, slots=1) as (store, engine, sender):
        assert engine.backlog_since() is None
        await _until(lambda: engine.lease_for_handoff(SystemClock().now()) is not None)  # the engine runs
        began = SystemClock().now()
        await _callbacks(store, engine, ["http://a.test/cb", "http://b.test/cb", "http://c.test/cb"], handed=handed)
        await _until(lambda: len(sender.urls) == 1)  # one slot: two apps' callbacks wait for it
        waiting = engine.backlog_since()
        assert waiting is not None and began <= waiting <= SystemClock().now()
        sender.release.set()
        await _until(lambda: len(sender.urls) == 3)
        await engine.drain()
        assert engine.backlog_since() is None


@pytest.mark.parametrize("handed", [False, True], ids=["claimed", "handed-over"])
async def test_callbacks_behind_the_same_app_s_earlier_one_are_not_the_engine_s_backlog(
    tmp_path: Path, handed: bool
) -> None:
    async with _engine(tmp_path, slots=256) as (store, engine, sender):
        await _until(lambda: engine.lease_for_handoff(SystemClock().now()) is not None)
        await _callbacks(store, engine, ["http://a.test/cb"] * 3, handed=handed)
        await _until(lambda: len(sender.urls) == 1)  # one at a time, in order: the app's own pace
        await asyncio.sleep(0.05)
        assert engine.backlog_since() is None
        sender.release.set()
        await _until(lambda: len(sender.urls) == 3)


async def test_a_backlog_beyond_its_destination_s_room_drains_on_wakes_with_little_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination takes a bounded number of requests (its in-flight share and its queue); a backlog of many
    times that is claimed as the destination makes room, and wakes the loop itself when it has: with the idle
    poll out of reach, a lost wake would leave rows unsent. A claim made before there is room for most of it
    would put most of it back (read, planned and written again for nothing)."""
    monkeypatch.setattr("callgrid.eventgrid.delivery.engine._IDLE_POLL_SECONDS", 3600.0)
    events = 600
    node = Node(Settings(data_dir=tmp_path, clock="system"))
    await node.start(run_loops=False)
    settings = node.delivery.settings
    settings.claim_batch, settings.max_in_flight_per_destination, settings.max_queued_per_destination = 64, 4, 32
    claimed = put_back = 0
    claim = node.delivery._claim

    async def counted(work):  # type: ignore[no-untyped-def]
        nonlocal claimed, put_back
        found = await claim(work)
        claimed += found[1]
        put_back += len(found[0].settled)
        return found

    node.delivery._claim = counted  # type: ignore[method-assign]
    with WebhookReceiver() as webhook:
        try:
            topic = node.resource.topic
            arm_id = f"{node.resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/backlog"
            destination = {"endpointType": "WebHook", "properties": {"endpointUrl": webhook.url}}
            body = {"properties": {"destination": destination}}
            async with node.store.transaction() as tx:
                await node.subscriptions.put(
                    tx, arm_id=arm_id, name="backlog", topic=topic, resource_type=SUBSCRIPTION_TYPE, body=body
                )
                await node.subscriptions.complete_validation(tx, arm_id.lower(), code=None, error=None)
            node.subscriptions_changed()
            async with node.store.transaction() as tx:
                for n in range(events):
                    event = event_grid_event(
                        topic=topic, event_type="Backlog.Test", subject=f"/{n}", data={"n": n}, data_version="1", now=0
                    )
                    await node.publisher.publish(tx, topic, event)
            task = asyncio.create_task(node.delivery.run_forever())
            try:
                await _until(lambda: len(webhook.events("Backlog.Test")) >= events, seconds=60)
                await node.delivery.drain()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await node.stop()
    assert sorted(e["data"]["n"] for e in webhook.events("Backlog.Test")) == list(range(events))
    # Each claim after the first waits for most of a claim's room (36 at most, 27 to wake): about a quarter put
    # back. Claiming again at once, and at half the room, put back more than was sent.
    assert put_back <= events // 2, (claimed, put_back)
    assert claimed - put_back == events
