"""Durable timers on the virtual clock: each fires once, when due, whatever order they were set in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callgrid.clock import VirtualClock
from callgrid.platform.timers import TimerService
from callgrid.store import Store, StoreTx, TimerRow, open_store


@dataclass
class Running:
    store: Store
    clock: VirtualClock
    timers: TimerService
    fired: list[str] = field(default_factory=list)

    async def schedule(self, name: str, due_at: float) -> None:
        async with self.store.transaction() as tx:
            await self.timers.schedule(tx, "note", due_at, {"name": name})

    async def until_fired(self, count: int) -> list[str]:
        async with asyncio.timeout(10):  # a bound for a failing run, not a measurement
            while len(self.fired) < count:
                await asyncio.sleep(0.01)
        return self.fired


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    store = await open_store(f"sqlite:///{tmp_path / 'callgrid.db'}")
    clock = VirtualClock(start=1_000.0)
    # No idle poll to fall back on: a timer that fires did so because the loop was woken or it was due.
    run = Running(store, clock, TimerService(store, clock, idle_poll_seconds=3600))

    async def note(tx: StoreTx, timer: TimerRow) -> None:
        run.fired.append(str(timer.payload["name"]))

    run.timers.register("note", note)
    task = asyncio.create_task(run.timers.run_forever())
    await clock.advance(0)
    try:
        yield run
    finally:
        task.cancel()
        await store.close()


async def test_a_timer_set_sooner_than_the_one_waited_for_fires_first(running: Running) -> None:
    await running.schedule("later", 1_060.0)
    await running.clock.advance(0)  # the loop now sleeps until 1,060
    await running.schedule("sooner", 1_005.0)
    await running.clock.advance(5)
    assert await running.until_fired(1) == ["sooner"]
    await running.clock.advance(55)
    assert await running.until_fired(2) == ["sooner", "later"]


async def test_timers_set_later_than_the_one_waited_for_fire_in_due_order(running: Running) -> None:
    await running.schedule("first", 1_010.0)
    await running.clock.advance(0)
    await running.schedule("third", 1_030.0)
    await running.schedule("second", 1_020.0)
    await running.clock.advance(40)
    assert await running.until_fired(3) == ["first", "second", "third"]


async def test_a_timer_set_while_the_loop_is_idle_fires_when_due(running: Running) -> None:
    await running.schedule("only", 1_001.0)
    await running.clock.advance(1)
    assert await running.until_fired(1) == ["only"]
