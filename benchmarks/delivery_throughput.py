"""Event Grid delivery throughput to one local webhook, unbatched and batched (issue 3).

Same run, same machine, same HTTP client (callgrid's Http1Sender, 256 connections):
- raw: bare POSTs of a one-event array, 256 at a time: the ceiling for unbatched delivery;
- unbatched: the delivery engine draining a pre-filled durable outbox (SQLite), one event per POST;
- batched: the same with maxEventsPerBatch=100 (Event Grid's output batching).
Delivery figures run from the engine's start until the store has recorded every event delivered
(claim, send, record, all durable). The webhook is an aiohttp server in its own process.
Prints JSON: events/s for each, the unbatched/raw ratio, and CPU per event (the engine's process: claim,
send, record, its commit thread) beside the raw client's CPU per POST: a figure that moves less with
what else the machine runs than a rate does.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from callgrid.config import Settings
from callgrid.eventgrid.delivery.http1 import Http1Sender
from callgrid.eventgrid.events import event_grid_event
from callgrid.node import Node

RAW_POSTS = 20_000
UNBATCHED_EVENTS = 20_000
BATCHED_EVENTS = 100_000
BATCH_SIZE = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _webhook(port: int) -> None:
    """A minimal app endpoint: answers validation, counts events, 200 for everything."""
    counts = {"events": 0, "posts": 0}

    async def receive(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            return web.json_response({"validationResponse": body[0]["data"]["validationCode"]})
        counts["posts"] += 1
        counts["events"] += len(body) if isinstance(body, list) else 1
        return web.Response(status=200)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", receive)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=2048)


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("webhook did not start")


def _event(topic: str, i: int, now: float) -> dict[str, Any]:
    # IncomingCall-sized data (~1 KB event), like the events callgrid exists to deliver.
    data = {
        "to": {"kind": "phoneNumber", "rawId": "4:+14255550123", "phoneNumber": {"value": "+14255550123"}},
        "from": {"kind": "phoneNumber", "rawId": "4:+12065550100", "phoneNumber": {"value": "+12065550100"}},
        "serverCallId": f"call-{i:08d}" + "x" * 60,
        "callerDisplayName": "",
        "incomingCallContext": "e" * 400,
        "correlationId": f"{i:032x}",
    }
    return event_grid_event(
        topic=topic,
        event_type="Microsoft.Communication.IncomingCall",
        subject=f"/phoneCall/caller/+12065550100/recipient/+14255550123/{i}",
        data=data,
        data_version="1.0",
        now=now,
    )


async def raw_rate(url: str, body: bytes) -> tuple[float, float]:
    """Bare POSTs per second, and the client's CPU per POST in µs."""
    sender = Http1Sender()
    headers = {"Content-Type": "application/json; charset=utf-8", "aeg-event-type": "Notification"}
    slots = asyncio.Semaphore(256)

    async def one() -> None:
        async with slots:
            result = await sender.send("POST", url, body=body, headers=headers, timeout=30)
            assert result.ok, result

    await asyncio.gather(*(one() for _ in range(500)))  # warm the connection pool
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(RAW_POSTS)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await sender.close()
    return RAW_POSTS / elapsed, cpu / RAW_POSTS * 1e6


async def _received(session: aiohttp.ClientSession, count_url: str) -> int:
    async with session.get(count_url) as response:
        return int((await response.json())["events"])


async def engine_rate(url: str, count_url: str, events: int, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Settings(data_dir=Path(tmp), clock="system"))
        await node.start(run_loops=False)
        try:
            topic = node.resource.topic
            arm_id = f"{node.resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/bench"
            destination: dict[str, Any] = {"endpointUrl": url}
            if batch > 1:
                destination.update(maxEventsPerBatch=batch, preferredBatchSizeInKilobytes=1024)
            body = {"properties": {"destination": {"endpointType": "WebHook", "properties": destination}}}
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
            for start in range(0, events, 5000):
                async with node.store.transaction() as tx:
                    for i in range(start, min(events, start + 5000)):
                        await node.publisher.publish(tx, topic, _event(topic, i, now))
            async with aiohttp.ClientSession() as session:
                before = await _received(session, count_url)
                started, cpu = time.perf_counter(), time.process_time()
                task = asyncio.create_task(node.delivery.run_forever())
                # Watched from the webhook's side until every event arrived, then from the store's until every
                # outcome is recorded: the store's own look (a scan by status) would stall the engine's loop.
                while await _received(session, count_url) - before < events:
                    await asyncio.sleep(0.02)
                while True:
                    async with node.store.transaction() as tx:
                        pending = await tx.list_deliveries_by(1, status="pending")
                    if not pending:
                        break
                    await asyncio.sleep(0.005)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                task.cancel()
            return {
                "events": events,
                "seconds": round(elapsed, 3),
                "events_per_s": round(events / elapsed),
                "engine_cpu_us_per_event": round(cpu / events * 1e6, 1),
            }
        finally:
            await node.stop()


async def main() -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_webhook, args=(port,), daemon=True)
    server.start()
    try:
        await _wait_port(port)
        url = f"http://127.0.0.1:{port}/hook"
        count_url = f"http://127.0.0.1:{port}/count"
        one_event = json.dumps([_event("/t", 0, time.time())], separators=(",", ":")).encode()
        raw, raw_cpu = await raw_rate(url, one_event)
        unbatched = await engine_rate(url, count_url, UNBATCHED_EVENTS, 1)
        batched = await engine_rate(url, count_url, BATCHED_EVENTS, BATCH_SIZE)
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "event_bytes": len(one_event) - 2,
                    "raw_posts_per_s": round(raw),
                    "raw_cpu_us_per_post": round(raw_cpu, 1),
                    "unbatched": unbatched,
                    "batched": {**batched, "max_events_per_batch": BATCH_SIZE},
                    "unbatched_vs_raw": round(unbatched["events_per_s"] / raw, 2),
                    "targets": {"batched_events_per_s": 5000, "unbatched_vs_raw": 0.5},
                },
                indent=2,
            )
        )
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    asyncio.run(main())
