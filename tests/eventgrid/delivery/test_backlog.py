"""What waits in the delivery engine's memory counts as delivery lag: claimed rows are leased while they
wait for a slot, their lane or a callback ahead of them, so the store's due rows do not show them; the
engine says since when its oldest has waited (the throttle adds it, api/throttle.py), and nothing once
all are sent."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from callgrid.clock import SystemClock
from callgrid.eventgrid.delivery.engine import DeliveryEngine, DeliverySettings
from callgrid.eventgrid.delivery.sender import SendResult
from callgrid.eventgrid.topics import EventPublisher, SubscriptionTable
from callgrid.store import open_store


class _HeldSender:
    """The network, held: each POST is recorded, then answered 200 once `release` is set."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        self.bodies.append(body)
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


async def test_claimed_requests_waiting_in_the_engine_say_since_when_until_sent(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    sender = _HeldSender()
    engine = DeliveryEngine(
        store=store,
        clock=SystemClock(),
        sender=sender,
        callback_authorization=lambda audience: "Bearer x",
        settings=DeliverySettings(),
    )
    publisher = EventPublisher(SystemClock(), SubscriptionTable(), engine.wake)
    task = asyncio.create_task(engine.run_forever())
    try:
        assert engine.backlog_since() is None
        began = SystemClock().now()
        async with store.transaction() as tx:
            for n in range(3):  # one app's callbacks go one at a time: the first is sent, two wait
                event = {"id": f"cb-{n}", "source": "calling/x", "type": "CallConnected", "data": {}}
                await publisher.send_callback(tx, url="http://app.test/cb", event=event)
        await _until(lambda: len(sender.bodies) == 1)
        waiting = engine.backlog_since()
        assert waiting is not None and began <= waiting <= SystemClock().now()
        sender.release.set()
        await _until(lambda: len(sender.bodies) == 3)
        await engine.drain()
        assert engine.backlog_since() is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
