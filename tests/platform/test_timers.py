"""Durable timers on the virtual clock: each fires once, when due, whatever order they were set in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callgrid.clock import VirtualClock
from callgrid.platform.timers import TimerService
from callgrid.store import Store, StoreTx, TimerRow
from callgrid.store.base import open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    yield opened
    await opened.close()


async def _running(store: Store, clock: VirtualClock) -> tuple[TimerService, list[str], asyncio.Task[None]]:
    # No idle poll to fall back on: a timer that fires did so because the loop was woken or due.
    timers = TimerService(store, clock, idle_poll_seconds=3600)
    fired: list[str] = []

    async def note(tx: StoreTx, timer: TimerRow) -> None:
        fired.append(str(timer.payload["name"]))

    timers.register("note", note)
    task = asyncio.create_task(timers.run_forever())
    await clock.advance(0)
    return timers, fired, task


async def _schedule(store: Store, timers: TimerService, name: str, due_at: float) -> None:
    async with store.transaction() as tx:
        await timers.schedule(tx, "note", due_at, {"name": name})


async def _until(fired: list[str], count: int) -> None:
    async with asyncio.timeout(10):  # a bound for a failing run, not a measurement
        while len(fired) < count:
            await asyncio.sleep(0.01)


async def test_a_timer_set_sooner_than_the_one_waited_for_fires_first(store: Store) -> None:
    clock = VirtualClock(start=1_000.0)
    timers, fired, task = await _running(store, clock)
    try:
        await _schedule(store, timers, "later", 1_060.0)
        await clock.advance(0)  # the loop now sleeps until 1,060
        await _schedule(store, timers, "sooner", 1_005.0)
        await clock.advance(5)
        await _until(fired, 1)
        assert fired == ["sooner"]
        await clock.advance(55)
        await _until(fired, 2)
        assert fired == ["sooner", "later"]
    finally:
        task.cancel()


async def test_timers_set_later_than_the_one_waited_for_fire_in_due_order(store: Store) -> None:
    clock = VirtualClock(start=1_000.0)
    timers, fired, task = await _running(store, clock)
    try:
        await _schedule(store, timers, "first", 1_010.0)
        await clock.advance(0)
        for n, due in enumerate((1_030.0, 1_020.0)):
            await _schedule(store, timers, f"then{n}", due)
        await clock.advance(40)
        await _until(fired, 3)
        assert fired == ["first", "then1", "then0"]
    finally:
        task.cancel()


async def test_a_timer_set_while_the_loop_is_idle_fires_when_due(store: Store) -> None:
    clock = VirtualClock(start=1_000.0)
    timers, fired, task = await _running(store, clock)
    try:
        await _schedule(store, timers, "only", 1_001.0)
        await clock.advance(1)
        await _until(fired, 1)
        assert fired == ["only"]
    finally:
        task.cancel()
