"""What a webhook POST costs the client that sends it: callgrid's delivery client (`Http1Sender`) against
aiohttp (the client it replaced, used as `ClientSession.request` the way the old sender did) and the floor of a
bare `asyncio.Protocol` with httptools' response parser (issue 15).

A routed call makes two deliveries, each a POST of an Event Grid batch to a webhook on a kept-alive
connection. The server is route_latency.py's do-nothing aiohttp app in its own process; only this
process's CPU is counted (`time.process_time`), one request at a time and 8 at once. The floor sends
prebuilt bytes and parses the answer, nothing else: what a hand-written client could at best approach,
not a candidate as it stands (no timeouts, pool limits, TLS or error handling). If aiosonic is installed,
it is measured too.

Prints JSON: µs of client CPU per request, best of 3 rounds; Http1Sender's and aiohttp's as ratios of the
floor's.
Usage: python benchmarks/delivery_client.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httptools
from route_latency import _BARE_SERVER, _free_port, _run_loop, _wait

# An IncomingCall batch's size, and the headers a delivery carries.
BODY = json.dumps([{"id": "0" * 36, "data": {"incomingCallContext": "x" * 1200}}]).encode()
HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "aeg-event-type": "Notification",
    "aeg-subscription-name": "ROUTER",
    "aeg-delivery-count": "0",
}

Send = Callable[[], Awaitable[int]]


async def _cpu_per_request(send: Send, requests: int, in_flight: int) -> float:
    for _ in range(100):  # warm up the connections
        await send()
    began = time.process_time()
    for _ in range(requests // in_flight):
        await asyncio.gather(*(send() for _ in range(in_flight)))
    return (time.process_time() - began) / (requests // in_flight * in_flight) * 1e6


async def _aiohttp(url: str, requests: int, in_flight: int) -> float:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=32, ssl=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:

        async def send() -> int:
            async with session.request(
                "POST",
                url,
                data=BODY,
                headers=HEADERS,
                timeout=aiohttp.ClientTimeout(total=30),
                allow_redirects=False,
            ) as response:
                async for _ in response.content.iter_chunked(16 * 1024):
                    pass
                return response.status

        return await _cpu_per_request(send, requests, in_flight)


class _Answer(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.waiter is not None:
            self.waiter.set_result(self.parser.get_status_code())


async def _floor(url: str, requests: int, in_flight: int) -> float:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
        + f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    idle: list[_Answer] = []
    for _ in range(in_flight):
        _, protocol = await loop.create_connection(_Answer, parts.hostname or "127.0.0.1", parts.port or 80)
        idle.append(protocol)

    async def send() -> int:
        protocol = idle.pop()
        try:
            protocol.waiter = loop.create_future()
            assert protocol.transport is not None
            protocol.transport.write(head + BODY)
            return await protocol.waiter
        finally:
            idle.append(protocol)

    return await _cpu_per_request(send, requests, in_flight)


async def _http1(url: str, requests: int, in_flight: int) -> float:
    from callgrid.eventgrid.delivery.http1 import Http1Sender

    sender = Http1Sender()

    async def send() -> int:
        result = await sender.send("POST", url, body=BODY, headers=HEADERS, timeout=30)
        return result.status or 0

    try:
        return await _cpu_per_request(send, requests, in_flight)
    finally:
        await sender.close()


async def _aiosonic(url: str, requests: int, in_flight: int) -> float:
    import aiosonic  # type: ignore[import-not-found]

    client = aiosonic.HTTPClient(verify_ssl=False)

    async def send() -> int:
        response = await client.post(url, data=BODY, headers=HEADERS, follow=False)
        await response.content()
        return int(response.status_code)

    return await _cpu_per_request(send, requests, in_flight)


async def _measure(url: str, requests: int) -> dict[str, Any]:
    clients: dict[str, Callable[[str, int, int], Awaitable[float]]] = {
        "aiohttp": _aiohttp,
        "http1": _http1,
        "floor": _floor,
    }
    try:
        import aiosonic  # type: ignore[import-not-found]  # noqa: F401

        clients["aiosonic"] = _aiosonic
    except ImportError:
        pass
    best: dict[str, dict[str, float]] = {}
    for _ in range(3):  # rounds, alternating clients
        for name, measure in clients.items():
            for in_flight in (1, 8):
                key = f"{in_flight}_in_flight"
                cpu = await measure(url, requests, in_flight)
                best.setdefault(name, {})[key] = round(min(cpu, best.get(name, {}).get(key, cpu)), 1)
    return {
        "benchmark": "delivery_client",
        "body_bytes": len(BODY),
        "client_cpu_us_per_request": best,
        "http1_vs_floor": {k: round(best["http1"][k] / best["floor"][k], 2) for k in best["floor"]},
        "aiohttp_vs_floor": {k: round(best["aiohttp"][k] / best["floor"][k], 2) for k in best["floor"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _BARE_SERVER, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/api/incomingCall"
        _wait(f"http://127.0.0.1:{port}/", None)
        print(json.dumps(_run_loop(_measure(url, args.requests)), indent=2))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
