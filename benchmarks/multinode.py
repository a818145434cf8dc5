"""Delivered events per second: one node on SQLite, one node on PostgreSQL, two nodes on one PostgreSQL
database (issue 12). Same run, same machine, same webhook.

Each configuration pre-fills a durable outbox with EVENTS IncomingCall-sized events (one subscription,
unbatched, one event per POST), then starts its node processes (a `Node` each, its delivery engine only),
lets them go together, and times until the store shows nothing pending (claim, send, record, all durable).
The webhook is an aiohttp server in its own process. Prints JSON: events/s of each and the two ratios the
issue sets targets for (two PostgreSQL nodes over one; one PostgreSQL node over one SQLite node).
Needs CALLGRID_TEST_POSTGRES_URL (or the local default); uses and drops schemas of its own.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
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


def _worker(store_url: str, data_dir: str, ready: Event, go: Event, done: Event) -> None:
    async def run() -> None:
        node = Node(Settings(data_dir=Path(data_dir), clock="system", store_url=store_url))
        await node.start(run_loops=False)
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.005)
        task = asyncio.create_task(node.delivery.run_forever())
        while not done.is_set():
            await asyncio.sleep(0.05)
        task.cancel()
        await node.stop()

    asyncio.run(run())


async def _pending(store_url: str, data_dir: Path) -> int:
    from callgrid.store import open_store

    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            return len(await tx.list_deliveries_by(1, status="pending"))
    finally:
        await store.close()


async def measure(store_url: str, nodes: int, url: str, count_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        await _fill(store_url, base / "fill", url)
        ctx = multiprocessing.get_context("spawn")
        go, done = ctx.Event(), ctx.Event()
        readies = [ctx.Event() for _ in range(nodes)]
        procs = [
            ctx.Process(target=_worker, args=(store_url, str(base / f"node{n}"), readies[n], go, done))
            for n in range(nodes)
        ]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(60):
                raise RuntimeError("a node did not start")
        async with aiohttp.ClientSession() as session, session.get(count_url) as response:
            before = (await response.json())["events"]
        started = time.perf_counter()
        go.set()
        while await _pending(store_url, base / "fill"):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        done.set()
        for p in procs:
            p.join(30)
        async with aiohttp.ClientSession() as session, session.get(count_url) as response:
            received = (await response.json())["events"] - before
        assert received >= EVENTS, (received, EVENTS)
        return {"nodes": nodes, "events": EVENTS, "seconds": round(elapsed, 2), "events_per_s": round(EVENTS / elapsed)}


async def main() -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_webhook, args=(port,), daemon=True)
    server.start()
    schemas: list[str] = []
    try:
        await _wait_port(port)
        url, count_url = f"http://127.0.0.1:{port}/hook", f"http://127.0.0.1:{port}/count"
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", 1, url, count_url)
        pg_url, schema = fresh_postgres_url("bench1")
        schemas.append(schema)
        pg_one = await measure(pg_url, 1, url, count_url)
        pg_url, schema = fresh_postgres_url("bench2")
        schemas.append(schema)
        pg_two = await measure(pg_url, 2, url, count_url)
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
