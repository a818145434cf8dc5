"""Rows published while the engine runs go in leased to its node and are sent without a claim; one whose
node died between the commit and the send is sent by that node started again (or, on a shared store, by
another once the lease ends), never by another node before then. Run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callgrid.clock import SystemClock
from callgrid.eventgrid.delivery.engine import DeliveryEngine, DeliverySettings
from callgrid.eventgrid.delivery.sender import SendResult
from callgrid.eventgrid.topics import EventPublisher, SubscriptionTable
from callgrid.store import Store, open_store
from callgrid.testing.stores import drop_schema, fresh_postgres_url

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'callgrid.db'}"
        return
    url, schema = fresh_postgres_url("handoff")
    try:
        yield url
    finally:
        drop_schema(schema)


class _Sender:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        self.bodies.append(body)
        return SendResult(200, "Succeeded")

    async def close(self) -> None:
        return None


class _Node:
    """An engine and a publisher on one store, leasing as `owner`; the claims that found rows are counted."""

    def __init__(self, store: Store, owner: str) -> None:
        self.sender = _Sender()
        self.engine = DeliveryEngine(
            store=store,
            clock=SystemClock(),
            sender=self.sender,
            callback_authorization=lambda audience: "Bearer x",
            settings=DeliverySettings(lease_owner=owner),
        )
        self.publisher = EventPublisher(SystemClock(), SubscriptionTable(), self.engine.wake, engine=self.engine)
        self.store = store
        self.claimed = 0
        claim = self.engine._claim

        async def counted(work):  # type: ignore[no-untyped-def]
            found = await claim(work)
            self.claimed += found[1]
            return found

        self.engine._claim = counted  # type: ignore[method-assign]

    async def callback(self, n: int) -> None:
        async with self.store.transaction() as tx:
            event = {"id": f"cb-{n}", "source": "calling/callConnections/x", "type": "CallConnected", "data": {}}
            await self.publisher.send_callback(tx, url=f"http://app.test/cb/{n}", event=event)

    @contextlib.asynccontextmanager
    async def running(self, *, recover: bool = True) -> AsyncIterator[None]:
        if recover:
            await self.engine.recover()
        task = asyncio.create_task(self.engine.run_forever())
        await asyncio.sleep(0.05)  # its first claim, of what is due already
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _wait(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within time")


async def test_a_row_published_while_the_engine_runs_is_sent_without_a_claim(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        assert await store.own_leases("node-a")
        node = _Node(store, "node-a")
        async with node.running():
            before = node.claimed
            for n in range(5):
                await node.callback(n)
            await _wait(lambda: len(node.sender.bodies) == 5)
            await node.engine.drain()
            assert node.claimed == before  # nothing was claimed: each row was handed over at its commit
        async with store.transaction() as tx:
            rows = await tx.list_deliveries_by(10)
        assert {r.status for r in rows} == {"delivered"} and len(rows) == 5
        assert all(r.lease_until is None and r.attempts == 1 for r in rows)
    finally:
        await store.close()


async def test_a_row_handed_over_but_never_sent_is_sent_by_its_node_started_again(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        assert await store.own_leases("node-a")
        dead = _Node(store, "node-a")
        # The node dies between the commit and the send: what it was handed is never started.
        dead.engine.hand_over = lambda rows, current: None  # type: ignore[method-assign]
        async with dead.running():
            await dead.callback(1)
            await asyncio.sleep(0.1)
        assert dead.sender.bodies == []
        async with store.transaction() as tx:
            (row,) = await tx.list_deliveries_by(10)
        assert row.status == "pending" and row.lease_until is not None  # leased at its insert

        if store.shared:
            # Another live node leaves it to its owner while the lease lasts.
            other = _Node(store, "node-b")
            async with other.running():
                await asyncio.sleep(0.2)
            assert other.sender.bodies == []

        again = _Node(store, "node-a")
        async with again.running():  # recover(): its own leases are due at once
            await _wait(lambda: len(again.sender.bodies) == 1)
            await again.engine.drain()
        async with store.transaction() as tx:
            (row,) = await tx.list_deliveries_by(10)
        assert row.status == "delivered"
    finally:
        await store.close()
