"""Delivered events per second: one node on SQLite, one node on PostgreSQL, two nodes on one PostgreSQL
database (issue 12). Same run, same machine, same webhook.

Each configuration pre-fills a durable outbox with EVENTS IncomingCall-sized events (one subscription,
unbatched, one event per POST), then starts its node processes (a `Node` each, its delivery engine only),
lets them go together, and times until the store shows nothing pending (claim, send, record, all durable).
The webhook is an aiohttp server in its own process. Prints JSON: events/s of each and the two ratios the
issue sets targets for (two PostgreSQL nodes over one; one PostgreSQL node over one SQLite node), and where
each phase's CPU went: the nodes' own (getrusage), the PostgreSQL server processes' and the webhook's (from
/proc), and how busy the whole machine was (/proc/stat), to tell a node's cost per event from a machine
that has no core left for a second node.
Needs CALLGRID_TEST_POSTGRES_URL (or the local default); uses and drops schemas of its own.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from delivery_throughput import _event, _free_port, _wait_port, _webhook

from callgrid.config import Settings
from callgrid.node import Node
from callgrid.testing.stores import drop_schema, fresh_postgres_url

EVENTS = 10_000


async def _fill(store_url: str, data_dir: Path, url: str) -> None:
    node = Node(Settings(data_dir=data_dir, clock="system", store_url=store_url))
    await node.start(run_loops=False)
    try:
        topic = node.resource.topic
        arm_id = f"{node.resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/bench"
        body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": url}}}}
        async with node.store.transaction() as tx:
            await node.subscriptions.put(
                tx,
                arm_id=arm_id,
                name="bench",
                topic=topic,
                resource_type="Microsoft.EventGrid/eventSubscriptions",
                body=body,
            )
            await node.subscriptions.complete_validation(tx, arm_id.lower(), code=None, error=None)
        node.subscriptions_changed()
        now = node.clock.now()
        for start in range(0, EVENTS, 2500):
            async with node.store.transaction() as tx:
                for i in range(start, min(EVENTS, start + 2500)):
                    await node.publisher.publish(tx, topic, _event(topic, i, now))
    finally:
        await node.stop()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(store_url: str, data_dir: str, ready: Event, go: Event, done: Event, cpu: Synchronized[float]) -> None:
    async def run() -> None:
        node = Node(Settings(data_dir=Path(data_dir), clock="system", store_url=store_url))
        await node.start(run_loops=False)
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.005)
        started = _cpu_seconds()
        task = asyncio.create_task(node.delivery.run_forever())
        while not done.is_set():
            await asyncio.sleep(0.05)
        cpu.value = _cpu_seconds() - started
        task.cancel()
        await node.stop()

    asyncio.run(run())


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process on this machine (other users' too), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = _proc_cpu(int(entry.name))
            except OSError:
                continue
    return found


def _postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Per process: a backend that ended meanwhile (another user's) must not count as negative work.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


async def measure(store_url: str, nodes: int, url: str, count_url: str, webhook_pid: int) -> dict[str, Any]:
    from callgrid.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        await _fill(store_url, base / "fill", url)
        ctx = multiprocessing.get_context("spawn")
        go, done = ctx.Event(), ctx.Event()
        readies = [ctx.Event() for _ in range(nodes)]
        cpus = [ctx.Value("d", 0.0) for _ in range(nodes)]
        procs = [
            ctx.Process(target=_worker, args=(store_url, str(base / f"node{n}"), readies[n], go, done, cpus[n]))
            for n in range(nodes)
        ]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(60):
                raise RuntimeError("a node did not start")
        async with aiohttp.ClientSession() as session, session.get(count_url) as response:
            before = (await response.json())["events"]
        # One store for the polling, opened before the clock starts: opening one per poll (PostgreSQL: a
        # connection, the migration check and a pool of two, 20 times a second) is load on the measured run.
        watcher = await open_store(store_url)
        machine_before, pg_before, hook_before = _machine(), _postgres_cpu(), _proc_cpu(webhook_pid)
        started = time.perf_counter()
        go.set()
        try:
            while True:
                async with watcher.transaction() as tx:
                    if not await tx.list_deliveries_by(1, status="pending"):
                        break
                await asyncio.sleep(0.05)
        finally:
            await watcher.close()
        elapsed = time.perf_counter() - started
        machine_after, pg_after, hook_after = _machine(), _postgres_cpu(), _proc_cpu(webhook_pid)
        done.set()
        for p in procs:
            p.join(30)
        async with aiohttp.ClientSession() as session, session.get(count_url) as response:
            received = (await response.json())["events"] - before
        assert received >= EVENTS, (received, EVENTS)
        node_cpu = sum(c.value for c in cpus)
        return {
            "nodes": nodes,
            "events": EVENTS,
            "seconds": round(elapsed, 2),
            "events_per_s": round(EVENTS / elapsed),
            "cpu": {
                "nodes_s": round(node_cpu, 2),
                "nodes_ms_per_event": round(node_cpu / EVENTS * 1000, 3),
                "postgres_s": round(_postgres_delta(pg_before, pg_after), 2),
                "webhook_s": round(hook_after - hook_before, 2),
                "machine_busy": round(
                    (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1]), 2
                ),
                "cores": os.cpu_count(),
            },
        }


async def main() -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_webhook, args=(port,), daemon=True)
    server.start()
    schemas: list[str] = []
    try:
        await _wait_port(port)
        url, count_url = f"http://127.0.0.1:{port}/hook", f"http://127.0.0.1:{port}/count"
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", 1, url, count_url, server.pid or 0)
        pg_url, schema = fresh_postgres_url("bench1")
        schemas.append(schema)
        pg_one = await measure(pg_url, 1, url, count_url, server.pid or 0)
        pg_url, schema = fresh_postgres_url("bench2")
        schemas.append(schema)
        pg_two = await measure(pg_url, 2, url, count_url, server.pid or 0)
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "sqlite_one_node": sqlite,
                    "postgresql_one_node": pg_one,
                    "postgresql_two_nodes": pg_two,
                    "two_nodes_vs_one": round(pg_two["events_per_s"] / pg_one["events_per_s"], 2),
                    "postgresql_vs_sqlite": round(pg_one["events_per_s"] / sqlite["events_per_s"], 2),
                    "targets": {"two_nodes_vs_one": 1.6, "postgresql_vs_sqlite": 0.7},
                },
                indent=2,
            )
        )
    finally:
        server.terminate()
        server.join()
        for schema in schemas:
            drop_schema(schema)


if __name__ == "__main__":
    asyncio.run(main())
