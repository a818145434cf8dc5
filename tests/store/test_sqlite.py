"""The SQLite store under steady writes: the WAL starts over, commits stay atomic."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from callgrid.store import open_store

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


async def test_wal_starts_over_under_steady_writes(tmp_path: Path) -> None:
    # 10,000 paced commits, about what 200 calls a second make in 9 s. Without a checkpoint that lets the
    # WAL restart, every commit appends (two pages of a 2 KB row): a WAL of 80+ MB; with it, the WAL starts
    # over past 16 MB. The file keeps its high-water size after a restart, so its size tells how far the
    # WAL ever got. Counted, not timed: a slower machine only gives the checkpoint thread more turns.
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    wal = tmp_path / "callgrid.db-wal"
    value = "x" * 2000
    commits, largest = 10_000, 0
    try:
        for n in range(commits):
            async with store.transaction() as tx:
                await tx.set_meta(f"k{n}", value)
            if n % 100 == 0:
                largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0.0005)
        async with store.transaction() as tx:
            assert await tx.get_meta(f"k{commits - 1}") == value
    finally:
        await store.close()
    assert largest < 32 * 1024 * 1024, f"WAL reached {largest} bytes in {commits} commits"


async def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    try:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.set_meta("half", "written")
                raise RuntimeError("crash mid-operation")
        async with store.transaction() as tx:
            assert await tx.get_meta("half") is None
    finally:
        await store.close()


def _wal_frames(db: Path, *, reset: bool = False) -> int:
    """Frames in the WAL, read by another connection; `reset` empties it first (TRUNCATE checkpoint)."""
    conn = sqlite3.connect(db)
    try:
        mode = "TRUNCATE" if reset else "PASSIVE"
        ((_busy, frames, _copied),) = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        return int(frames)
    finally:
        conn.close()


async def test_transactions_arriving_together_share_one_commit(tmp_path: Path) -> None:
    # 50 one-row transactions started together join one group: one commit, the table's page written once
    # (a frame or two), where 50 commits would write it 50 times. Counted in WAL frames, not timed.
    db = tmp_path / "callgrid.db"
    store = await open_store(f"sqlite:///{db}")

    async def write(n: int) -> None:
        async with store.transaction() as tx:
            await tx.set_meta(f"row-{n}", "v")

    try:
        _wal_frames(db, reset=True)
        await asyncio.gather(*(write(n) for n in range(50)))
        together = _wal_frames(db)
        async with store.transaction() as tx:
            assert [await tx.get_meta(f"row-{n}") for n in range(50)] == ["v"] * 50
    finally:
        await store.close()
    assert 0 < together <= 5, f"50 transactions started together wrote {together} WAL frames"


async def test_a_failed_member_of_a_group_rolls_back_alone(tmp_path: Path) -> None:
    db = tmp_path / "callgrid.db"
    store = await open_store(f"sqlite:///{db}")
    committed: list[int] = []

    async def write(n: int) -> None:
        async with store.transaction() as tx:
            await tx.set_meta(f"row-{n}", "v")
            tx.after_commit(lambda: committed.append(n))
            if n % 3 == 1:
                raise RuntimeError(f"member {n} fails")

    try:
        results = await asyncio.gather(*(write(n) for n in range(12)), return_exceptions=True)
        failed = [n for n, r in enumerate(results) if isinstance(r, RuntimeError)]
        assert failed == [1, 4, 7, 10]
        assert sorted(committed) == [n for n in range(12) if n not in failed]
    finally:
        await store.close()
    # What a fresh connection finds: every member but the failed ones, and none of theirs.
    conn = sqlite3.connect(db)
    try:
        keys = {k for (k,) in conn.execute("SELECT key FROM meta WHERE key LIKE 'row-%'")}
    finally:
        conn.close()
    assert keys == {f"row-{n}" for n in range(12) if n not in failed}


async def test_a_failed_first_member_does_not_take_the_others_with_it(tmp_path: Path) -> None:
    # The first transaction of a group holds no savepoint: its failure rolls back the whole open
    # transaction, so the ones after it must start a group of their own.
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")

    async def write(n: int) -> None:
        async with store.transaction() as tx:
            await tx.set_meta(f"row-{n}", "v")
            if n == 0:
                raise RuntimeError("the first fails")

    try:
        results = await asyncio.gather(*(write(n) for n in range(5)), return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1:] == [None] * 4
        async with store.transaction() as tx:
            assert [await tx.get_meta(f"row-{n}") for n in range(5)] == [None, "v", "v", "v", "v"]
    finally:
        await store.close()
