"""The routed story's floor on this machine: its hops, on callgrid's own HTTP stacks, with nothing done at them.

`route_latency.py --find-max` measures the routed story (PSTN call placed -> IncomingCall to the router ->
redirect -> the identity's IncomingCall) through callgrid and its router. This script runs the same driver
and the same search against two do-nothing stand-ins that make the same four HTTP exchanges per call, on the
same stacks and in the same number of processes:

  driver --HTTPS POST--> platform (uvicorn, httptools, uvloop, TLS; answers 201 with a serverCallId)
  platform --POST--> router webhook (callgrid's delivery client, Http1Sender; a 1.3 KB IncomingCall-sized body)
  router (uvicorn, plain HTTP; answers 200) --HTTPS POST--> platform /redirect (aiohttp, one kept-alive session,
      as the router's SDK transport)
  platform (answers 204) --POST--> the driver's webhook (Http1Sender again)

No signature, no store, no event, no filter, no SDK: what is left is what the four exchanges cost on this
machine's cores. Its ceiling (p99 <= 25 ms, nothing lost) is the most the routed story could reach here if
callgrid and the router did no work at all; `route_latency.py --find-max` in the same run says how far
below that floor the real story stands.

`--stack bare` puts both stand-ins on bare asyncio protocols with httptools' parser (`bare_http.py`) and the
router's redirect on Http1Sender: the floor of Python's asyncio itself on this machine, below any framework.

Prints JSON: the floor's find-max (steps, CPU per call per process), and this machine's bare round trips.
Usage: python benchmarks/route_floor.py [--stack uvicorn|bare] [--rates 200,400,...] [--seconds 10]
       [--refine 2] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import bare_http
import orjson
import uvicorn
from route_latency import Bench, _find_max, _free_port, _run_loop, _wait, stop

from callgrid.eventgrid.delivery.http1 import Http1Sender
from callgrid.security.tls import ensure_tls_material

PAD = "x" * 900  # an IncomingCall is ~1.3 KB, most of it the incomingCallContext


def _event(call_id: str, to: str) -> bytes:
    return orjson.dumps(
        [
            {
                "id": uuid.uuid4().hex,
                "topic": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Communication/communicationServices/x",
                "subject": "/phonenumber/" + to,
                "eventType": "Microsoft.Communication.IncomingCall",
                "eventTime": "2026-11-30T00:00:00.0000000Z",
                "dataVersion": "1.0",
                "metadataVersion": "1",
                "data": {"serverCallId": call_id, "to": {"rawId": to}, "incomingCallContext": PAD},
            }
        ]
    )


class Platform:
    """Answers first, then sends, as callgrid does (its event goes to the delivery engine after the request's
    commit; here there is no commit)."""

    def __init__(self, router_hook: str, driver_hook: str) -> None:
        self.router_hook, self.driver_hook = router_hook, driver_hook
        self.sender = Http1Sender(max_connections=500, max_connections_per_host=500)
        self.tasks: set[asyncio.Task[Any]] = set()

    def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        request = orjson.loads(body)
        if path == b"/redirect":
            call_id, answer, url = request["serverCallId"], (204, b""), self.driver_hook
        else:
            call_id = uuid.uuid4().hex
            answer, url = (201, orjson.dumps({"serverCallId": call_id})), self.router_hook
        headers_out = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
        event = _event(call_id, str(request.get("to", "")))
        task = asyncio.ensure_future(self.sender.send("POST", url, body=event, headers=headers_out, timeout=30))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return answer


class Router:
    """Plain HTTP in; the redirect out over kept-alive connections, awaited before the webhook's answer, as the
    router answers after its redirect. Out through aiohttp (azure-core's transport, what the router's SDK
    client uses) on the uvicorn stack, through Http1Sender on the bare one."""

    def __init__(self, platform: str, bare: bool) -> None:
        self.platform = platform
        self.bare = bare
        self.session: aiohttp.ClientSession | None = None
        self.sender = Http1Sender(max_connections=500, max_connections_per_host=500)

    async def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        if path == b"/healthz":
            return 200, b""
        event = orjson.loads(body)[0]
        redirect = orjson.dumps({"serverCallId": event["data"]["serverCallId"]})
        url, json_type = self.platform + "/redirect", {"Content-Type": "application/json"}
        if self.bare:
            await self.sender.send("POST", url, body=redirect, headers=json_type, timeout=30)
            return 200, b""
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        async with self.session.post(url, data=redirect, headers=json_type) as answer:
            await answer.read()
        return 200, b""


def _asgi(handle: Any) -> Any:
    """The same handler as an ASGI app, for uvicorn."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        answer = handle(scope["method"].encode(), scope["path"].encode(), headers, b"".join(chunks))
        status, body = await answer if asyncio.iscoroutine(answer) else answer
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _serve(role: str, stack: str, port: int, args: list[str]) -> None:
    """One stand-in, in this process, until it is terminated."""
    if role == "platform":
        router_hook, driver_hook, certfile, keyfile = args
        handle: Any = Platform(router_hook, driver_hook).handle
    else:
        (platform,) = args
        handle, certfile, keyfile = Router(platform, stack == "bare").handle, "", ""
    if stack == "uvicorn":
        tls: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": keyfile} if certfile else {}
        uvicorn.run(_asgi(handle), host="127.0.0.1", port=port, log_level="warning", access_log=False, **tls)
        return

    async def forever() -> None:
        context = None
        if certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile, keyfile)
        await bare_http.serve(handle, "127.0.0.1", port, context)
        await asyncio.Event().wait()

    _run_loop(forever())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,400,600,800,1000,1200,1600,2000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--p99-ms", type=float, default=25.0)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--stack",
        choices=["uvicorn", "bare"],
        default="uvicorn",
        help="the stand-ins' HTTP: uvicorn and aiohttp as callgrid and its router, or bare protocols",
    )
    parser.add_argument("--serve", nargs="+", metavar="ARG", help=argparse.SUPPRESS)  # a stand-in's process
    args = parser.parse_args()
    if args.serve:
        role, port, *rest = args.serve
        _serve(role, args.stack, int(port), rest)
        return

    work = Path(tempfile.mkdtemp(prefix="route-floor-"))
    tls = ensure_tls_material(work / "tls")
    platform_port, router_port, hook_port = _free_port(), _free_port(), _free_port()
    platform = f"https://127.0.0.1:{platform_port}"
    router = f"http://127.0.0.1:{router_port}"
    me = [sys.executable, __file__, "--stack", args.stack, "--serve"]
    hooks = [router + "/webhook", f"http://127.0.0.1:{hook_port}/identities"]
    procs = [
        subprocess.Popen([*me, "platform", str(platform_port), *hooks, str(tls.server_cert), str(tls.server_key)]),
        subprocess.Popen([*me, "router", str(router_port), platform]),
    ]
    try:
        _wait(router + "/healthz", None)
        # The driver signs its requests as for callgrid; the stand-in does not check (no key it would know).
        env = {"CALLGRID_ENDPOINT": platform, "CALLGRID_ACCESS_KEY": "AAAA"}
        bench = Bench(env, router, {"callgrid": procs[0].pid, "router": procs[1].pid})
        numbers = [f"+1425555{i:04d}" for i in range(50)]

        async def run() -> dict[str, Any]:
            hook = await bare_http.serve(bench.receive, "127.0.0.1", hook_port)
            try:
                rates = [float(r) for r in args.rates.split(",")]
                return await _find_max(bench, numbers, rates, args.seconds, args.p99_ms, args.refine, args.warmup)
            finally:
                await bench.close()
                hook.close()

        load_before = os.getloadavg()
        result = _run_loop(run())
        result["cpu_ms_per_call_at_floor"] = result.pop("cpu_ms_per_routed_call_at_max")
        result["max_floor_calls_per_s"] = result.pop("max_routed_calls_per_s")
        result["max_floor_vs_bare_round_trips"] = result.pop("max_routed_vs_bare_round_trips")
        print(
            json.dumps(
                {
                    "benchmark": "route_floor",
                    "stack": args.stack,
                    **result,
                    "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                },
                indent=2,
            )
        )
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    main()
