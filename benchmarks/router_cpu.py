"""The router's CPU per routed call, alone (issue 15): `router serve` between Event Grid and a stand-in ACS.

`route_latency.py` measures the routed story with all three processes sharing two cores, so the router's
CPU per call moves with whatever else callgrid and the machine do. Here only the router does real work:
this script POSTs Event Grid-schema IncomingCall events (phone number to an assigned number) straight to its
webhook at a steady open-loop rate, and its `redirect_call` goes (official SDK, HMAC-signed, over TLS) to a
stand-in that answers 204 and counts. The router's user + system CPU per call comes from /proc.

Source trees given as arguments (each a `src` directory) are measured in turn, `--rounds` times, so a
change and its baseline share the session. Prints JSON: per tree, min and median of the router's, the
driver's and the stand-in's CPU ms per call over all repetitions.
Usage: python benchmarks/router_cpu.py [--rate 200] [--seconds 4] [--repeat 3] [--rounds 2] [SRC ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from callgrid.security.tls import ensure_tls_material

SECRET = "bench-secret"
NUMBERS = [f"+1425555{i:04d}" for i in range(50)]

# The stand-in ACS: POST /calling/callConnections:redirect -> 204, GET /count -> how many so far.
STAND_IN = r"""
import ssl, sys
from aiohttp import web
redirected = 0
async def redirect(request):
    global redirected
    await request.read()
    redirected += 1
    return web.Response(status=204)
async def count(request):
    return web.Response(text=str(redirected))
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[2], sys.argv[3])
app = web.Application()
app.router.add_post("/calling/callConnections:redirect", redirect)
app.router.add_get("/count", count)
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=context, access_log=None, print=None, loop=loop)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(url: str, context: ssl.SSLContext | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _event(number: str) -> bytes:
    """An IncomingCall as callgrid delivers it (sizes alike; the context is opaque to the router)."""
    event = {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/callgrid/providers/"
        "Microsoft.Communication/communicationServices/callgrid",
        "subject": f"/caller/4:+12065550100/recipient/4:{number}",
        "data": {
            "to": {"kind": "phoneNumber", "rawId": f"4:{number}", "phoneNumber": {"value": number}},
            "from": {"kind": "phoneNumber", "rawId": "4:+12065550100", "phoneNumber": {"value": "+12065550100"}},
            "serverCallId": uuid.uuid4().hex * 2,
            "callerDisplayName": "",
            "incomingCallContext": "eyJhbGciOiJIUzI1NiJ9." + "x" * 260 + "." + uuid.uuid4().hex,
            "correlationId": str(uuid.uuid4()),
        },
        "eventType": "Microsoft.Communication.IncomingCall",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2026-11-29T10:00:00.000000Z",
    }
    return json.dumps([event]).encode()


async def _steady(
    webhook: str, stand_in: str, context: ssl.SSLContext, rate: float, seconds: float, pids: dict[str, int]
) -> dict[str, float]:
    headers = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, ssl=context)) as session:

        async def post(i: int) -> None:
            async with session.post(webhook, data=_event(NUMBERS[i % len(NUMBERS)]), headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"the webhook answered {r.status}")

        async def redirected() -> int:
            async with session.get(stand_in + "/count") as r:
                return int(await r.text())

        async def until(count: int) -> None:
            while await redirected() < count:
                await asyncio.sleep(0.01)

        base = await redirected()
        for i in range(50):  # warm-up: connections, the SDK client, the store
            await post(i)
        await until(base + 50)
        total = int(rate * seconds)
        before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
        await until(base + 50 + total)
        return {name: (_cpu_seconds(pid) - before[name]) * 1000 / total for name, pid in pids.items()}


def _start_router(src: str, env: dict[str, str], work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    db = work / f"router-{port}.db"
    env = {**env, "PYTHONPATH": src}
    csv = work / "numbers.csv"
    csv.write_text("".join(f"{n},8:acs:00000000-0000-0000-0000-000000000000_{i:08d}\n" for i, n in enumerate(NUMBERS)))
    command = [sys.executable, "-m", "callgrid", "router"]
    subprocess.run([*command, "import", str(csv), "--db", str(db)], env=env, check=True, capture_output=True)
    with sqlite3.connect(db) as conn:  # a known webhook secret (the router keeps the one it finds)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('webhook_secret', ?)", (SECRET,))
    log = (work / f"router-{port}.log").open("wb")
    serve = [*command, "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait(f"http://127.0.0.1:{port}/healthz", None)
    return proc, port, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per router start")
    parser.add_argument("--rounds", type=int, default=2, help="times each tree is started")
    parser.add_argument("trees", nargs="*", help="src directories to compare (default: this checkout's)")
    args = parser.parse_args()
    trees = args.trees or [str(Path(__file__).resolve().parent.parent / "src")]

    work = Path(tempfile.mkdtemp(prefix="router-cpu-"))
    tls = ensure_tls_material(work / "tls")
    context = ssl.create_default_context(cafile=str(tls.ca_bundle))
    port = _free_port()
    stand_in_proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(port), str(tls.server_cert), str(tls.server_key)]
    )
    stand_in = f"https://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SSL_CERT_FILE": str(tls.ca_bundle),
        "REQUESTS_CA_BUNDLE": str(tls.ca_bundle),
        "CALLGRID_ROUTER_CONNECTION_STRING": f"endpoint={stand_in}/;accesskey=c2VjcmV0LWZvci1hLWJlbmNo",
    }
    samples: dict[str, dict[str, list[float]]] = {tree: {} for tree in trees}
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    load_before = os.getloadavg()[0]
    try:
        _wait(stand_in + "/count", context)
        for _ in range(args.rounds):
            for tree in trees:
                router, router_port, db = _start_router(tree, env, work)
                try:
                    webhook = f"http://127.0.0.1:{router_port}/api/incomingCall?secret={SECRET}"
                    pids = {"router": router.pid, "driver": os.getpid(), "stand_in": stand_in_proc.pid}
                    for _ in range(args.repeat):
                        cpu = run(_steady(webhook, stand_in, context, args.rate, args.seconds, pids))
                        for name, value in cpu.items():
                            samples[tree].setdefault(name, []).append(value)
                finally:
                    router.terminate()
                    router.wait(15)
                with sqlite3.connect(db) as conn:
                    states = conn.execute("SELECT state, count(*) FROM decisions GROUP BY state").fetchall()
                if [s for s, _ in states] != ["done"]:
                    raise RuntimeError(f"{tree}: decisions not all done: {states}")
    finally:
        stand_in_proc.terminate()
        stand_in_proc.wait(15)
    result: dict[str, Any] = {
        "benchmark": "router_cpu",
        "rate_per_s": args.rate,
        "calls_per_repetition": int(args.rate * args.seconds),
        "repetitions_per_tree": args.rounds * args.repeat,
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_ms_per_call": {
            tree: {
                name: {"min": round(min(values), 3), "median": round(sorted(values)[len(values) // 2], 3)}
                for name, values in by_process.items()
            }
            for tree, by_process in samples.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
