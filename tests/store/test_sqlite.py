"""The SQLite store under steady writes: the WAL starts over, commits stay atomic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callgrid.store import open_store


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
