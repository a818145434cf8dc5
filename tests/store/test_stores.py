"""What every store promises (run on SQLite and on PostgreSQL), and what a shared store adds: two
processes' worth of connections on one database never take the same delivery or timer, wake each other,
share keys, and a pool with no free connection answers StoreUnavailable instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.platform.keys import load_or_create_keys
from callgrid.store import DeliveryRow, DuplicateKey, Store, StoreUnavailable, TimerRow, open_store
from callgrid.testing.stores import drop_schema, fresh_postgres_url

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


async def _outbox(store: Store, count: int, *, at: float = 0.0) -> list[str]:
    ids = []
    async with store.transaction() as tx:
        for n in range(count):
            await tx.add_event(f"e{n}", "/topic", f'{{"n": {n}}}', at)
            row = DeliveryRow(
                id=f"d{n:05d}", kind="eventgrid", event_id=f"e{n}", url="http://x", created_at=at, next_attempt_at=at
            )
            await tx.add_delivery(row)
            ids.append(row.id)
    return ids


async def test_a_failed_transaction_leaves_nothing(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.set_meta("half", "written")
                await tx.put_call("c1", {"state": "connecting"}, 1.0)
                raise RuntimeError("crash mid-operation")
        async with store.transaction() as tx:
            assert await tx.get_meta("half") is None
            assert await tx.get_call("c1") is None
    finally:
        await store.close()


async def test_a_duplicate_key_leaves_the_transaction_usable(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            await tx.add_identity("8:acs:a", 1.0)
            with pytest.raises(DuplicateKey):
                await tx.add_identity("8:acs:a", 2.0)
            await tx.add_identity("8:acs:b", 3.0)
        async with store.transaction() as tx:
            a, b = await tx.get_identity("8:acs:a"), await tx.get_identity("8:acs:b")
        assert a is not None and a["createdAt"] == 1.0
        assert b is not None and b["createdAt"] == 3.0
    finally:
        await store.close()


async def test_claims_keep_order_and_leases_expire(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        ids = await _outbox(store, 5)
        async with store.transaction() as tx:
            claimed = await tx.claim_deliveries(now=1.0, limit=3, lease_until=100.0)
        # Raised together, sent in the order raised; returned as they were before the claim.
        assert [r.id for r, _ in claimed] == ids[:3]
        assert [r.next_attempt_at for r, _ in claimed] == [0.0] * 3
        assert all(r.lease_until == 100.0 for r, _ in claimed)
        assert claimed[0][1] == '{"n": 0}'
        async with store.transaction() as tx:
            # Leased rows are not due again before their lease ends, whoever asks.
            assert [r.id for r, _ in await tx.claim_deliveries(now=50.0, limit=10, lease_until=200.0)] == ids[3:]
            assert await tx.claim_deliveries(now=99.0, limit=10, lease_until=300.0) == []
            # The node holding them died: past the lease they are claimed again, as they were.
            again = await tx.claim_deliveries(now=100.5, limit=10, lease_until=400.0)
        assert [r.id for r, _ in again] == ids[:3]
        assert all(r.attempts == 0 and r.lease_until == 400.0 for r, _ in again)
        async with store.transaction() as tx:
            # At the very instant a lease ends its rows are due (next_delivery_due says so) and claimable:
            # a clock stepped to that instant once found them due and not claimable, and the engine spun.
            assert await tx.next_delivery_due(400.0) == 200.0
            assert [r.id for r, _ in await tx.claim_deliveries(now=200.0, limit=10, lease_until=500.0)] == ids[3:]
            assert [r.id for r, _ in await tx.claim_deliveries(now=400.0, limit=10, lease_until=600.0)] == ids[:3]
    finally:
        await store.close()


async def test_a_node_started_again_takes_back_its_own_leases(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        ids = await _outbox(store, 4)
        assert await store.own_leases("node-a")
        async with store.transaction() as tx:
            await tx.claim_deliveries(now=1.0, limit=2, lease_until=100.0, owner="node-a")
            await tx.claim_deliveries(now=1.0, limit=2, lease_until=100.0, owner="node-b")
            # node-a starts again: what it had leased is due at once, long before the lease ends.
            await tx.release_leases("node-a")
            again = await tx.claim_deliveries(now=2.0, limit=10, lease_until=200.0, owner="node-a")
        if store.shared:
            # node-b's leases are its own (it may be sending them): they wait for their end.
            assert [r.id for r, _ in again] == ids[:2]
        else:
            # One node per SQLite file: every lease in it is this node's past life's.
            assert [r.id for r, _ in again] == ids
    finally:
        await store.close()


async def test_a_row_inserted_leased_is_as_a_claim_leaves_it(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        assert await store.own_leases("node-a")
        async with store.transaction() as tx:
            for n, owner in enumerate(("node-a", "node-b")):
                await tx.add_event(f"e{n}", "/topic", "{}", 1.0)
                row = DeliveryRow(
                    id=f"d{n}",
                    kind="eventgrid",
                    event_id=f"e{n}",
                    url="http://x",
                    created_at=1.0,
                    next_attempt_at=1.0,
                    lease_until=100.0,
                )
                await tx.add_delivery(row, owner)
                assert row.next_attempt_at == 1.0  # the caller's row is left as it was
        async with store.transaction() as tx:
            # Nobody claims them before the lease ends, and nothing counts as due until then.
            assert await tx.claim_deliveries(now=99.0, limit=10, lease_until=300.0, owner="node-c") == []
            assert await tx.next_delivery_due(2.0) == 100.0
        async with store.transaction() as tx:
            # node-a starts again: what it leased is due at once (at its creation), node-b's waits.
            await tx.release_leases("node-a")
            again = await tx.claim_deliveries(now=2.0, limit=10, lease_until=200.0, owner="node-a")
        assert [r.id for r, _ in again] == (["d0"] if store.shared else ["d0", "d1"])
        assert again[0][0].next_attempt_at == 1.0
        async with store.transaction() as tx:
            # Past its lease, a row is anyone's again.
            later = await tx.claim_deliveries(now=100.5, limit=10, lease_until=400.0, owner="node-c")
        assert [r.id for r, _ in later] == ([] if not store.shared else ["d1"])
    finally:
        await store.close()


async def test_timers_come_due_in_order(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            await tx.add_timer(TimerRow("late", 20.0, "ring", {"call": "b"}))
            await tx.add_timer(TimerRow("early", 10.0, "ring", {"call": "a"}))
            assert await tx.next_timer_due() == 10.0
        async with store.transaction() as tx:
            due = await tx.due_timers(15.0, 10)
            assert [(t.id, t.payload) for t in due] == [("early", {"call": "a"})]
            await tx.delete_timer("early")
        async with store.transaction() as tx:
            assert await tx.next_timer_due() == 20.0
    finally:
        await store.close()


# ---------------------------------------------------------------- PostgreSQL: several nodes, one database


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, schema = fresh_postgres_url("store")
    yield url
    drop_schema(schema)


async def test_two_nodes_never_claim_the_same_delivery(pg_url: str) -> None:
    nodes = [await open_store(pg_url) for _ in range(2)]
    try:
        ids = await _outbox(nodes[0], 2000)
        taken: list[list[str]] = [[], []]

        async def drain(node: int) -> None:
            while True:
                async with nodes[node].transaction() as tx:
                    rows = await tx.claim_deliveries(now=1.0, limit=25, lease_until=1000.0)
                    await asyncio.sleep(0)  # hold the rows' locks while the other node claims
                if not rows:
                    return
                taken[node] += [r.id for r, _ in rows]

        await asyncio.gather(*(drain(n % 2) for n in range(6)))
        assert sorted(taken[0] + taken[1]) == ids  # each once, none twice, none left
        assert taken[0] and taken[1]
    finally:
        for node in nodes:
            await node.close()


async def test_a_due_timer_is_taken_by_one_node_while_it_fires(pg_url: str) -> None:
    a, b = await open_store(pg_url), await open_store(pg_url)
    try:
        async with a.transaction() as tx:
            await tx.add_timer(TimerRow("t1", 1.0, "ring", {}))
        async with a.transaction() as tx_a:
            assert [t.id for t in await tx_a.due_timers(5.0, 10)] == ["t1"]
            async with b.transaction() as tx_b:
                assert await tx_b.due_timers(5.0, 10) == []  # a is firing it
            await tx_a.delete_timer("t1")
        async with b.transaction() as tx_b:
            assert await tx_b.due_timers(5.0, 10) == []  # fired once, gone
    finally:
        await a.close()
        await b.close()


async def test_work_added_on_one_node_wakes_the_other(pg_url: str) -> None:
    a, b = await open_store(pg_url), await open_store(pg_url)
    try:
        woken = {"delivery": asyncio.Event(), "timer": asyncio.Event()}
        b.on_change("delivery", woken["delivery"].set)
        b.on_change("timer", woken["timer"].set)
        await asyncio.sleep(0.3)  # LISTEN in place; the first look after connecting wakes both once
        woken["delivery"].clear()
        woken["timer"].clear()
        await _outbox(a, 1)
        await asyncio.wait_for(woken["delivery"].wait(), 5)
        assert not woken["timer"].is_set()
        async with a.transaction() as tx:
            await tx.add_timer(TimerRow("t", 1.0, "ring", {}))
        await asyncio.wait_for(woken["timer"].wait(), 5)
    finally:
        await a.close()
        await b.close()


async def test_nodes_starting_together_share_one_set_of_keys(pg_url: str, tmp_path: Path) -> None:
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        keys = await asyncio.gather(*(load_or_create_keys(s, tmp_path / f"node{n}") for n, s in enumerate(stores)))
        numbers = {k.token_key.private_numbers().d for k in keys}
        assert len(numbers) == 1
        assert len({k.callback_key.private_numbers().d for k in keys}) == 1
        assert len({k.context_secret for k in keys}) == 1
        assert not (tmp_path / "node0" / "keys").exists()  # in the database, not in a data dir
    finally:
        for s in stores:
            await s.close()


async def test_a_lease_owner_name_is_held_by_one_live_process_at_a_time(pg_url: str) -> None:
    first, second = await open_store(pg_url), await open_store(pg_url)
    try:
        assert await first.own_leases("node-a")
        # A copy of node-a's data directory started elsewhere: it must not take node-a's leases back.
        assert not await second.own_leases("node-a")
        assert await second.own_leases("node-b")
        await first.close()
        # node-a gone: the name is free for it to start again.
        third = await open_store(pg_url)
        try:
            assert await third.own_leases("node-a")
        finally:
            await third.close()
    finally:
        await first.close()
        await second.close()


async def test_a_pool_with_no_free_connection_answers_unavailable_not_never(pg_url: str) -> None:
    store = await open_store(pg_url + "&pool_size=1&pool_timeout=0.5")

    async def second() -> None:
        async with store.transaction():
            pass

    try:
        async with store.transaction():
            with pytest.raises(StoreUnavailable, match="no database connection became free"):
                # The bound only tells a hang from an answer: the pool gives up after 0.5 s.
                await asyncio.wait_for(second(), 30)
        # Freed, it serves again.
        async with store.transaction() as tx:
            await tx.set_meta("k", "v")
    finally:
        await store.close()
