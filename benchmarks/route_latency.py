"""Route latency through the router (issue 5): PSTN call placed -> the identity's IncomingCall delivered.

Three real processes, as deployed: `callgrid serve` (system clock, SQLite), `callgrid router serve` (its own
SQLite), and this script, which places calls (signed POST /callgrid/v1/calls) at a steady rate and runs the
webhook subscribed to identities' calls. Measured in the same run, at the same rate:

  routed   PSTN -> owned number -> IncomingCall to the router -> redirect_call -> IncomingCall to the identity
  direct   PSTN -> identity: the same placement and one Event Grid hop, no router (the floor)
  hops     bare HTTP round trips: a signed callgrid request, and the router's /healthz

Prints JSON: p50/p99/max in ms for each, and the router's cost (routed - direct) at p50 and p99.
Usage: python benchmarks/route_latency.py [--rate 200] [--seconds 10] [--numbers 50]

`--find-max [--rates 100,200,...] [--seconds 10]`: the routed phase alone at rising rates (then bisected),
reporting the highest steady rate with p99 <= 25 ms and nothing lost or refused, this machine's bare HTTP
round trips per second measured in the same run (the ratio compares across machines), and the CPU per
routed call of each process at that rate. Each step first runs `--warmup` seconds at its rate, not counted:
the steady state, not the ramp out of the pause between steps (on a VM whose idle vCPUs halt, the first
requests after that pause took 30-50 ms; `machine.round_trip_after_idle_ms` shows the effect).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import bare_http
import orjson

from callgrid.eventgrid.delivery.http1 import Http1Sender
from callgrid.security import sign_request

CALLER = "+12065550100"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "callgrid", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:  # what the command said, not only that it failed
        raise RuntimeError(f"callgrid {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def _wait(url: str, ca: str | None, timeout: float = 30) -> None:
    context = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2) if ordered else float("nan")


def _summary(values: list[float], sent: int, refused: int = 0) -> dict[str, Any]:
    return {
        "n": len(values),
        "lost": sent - len(values) - refused,
        "refused": refused,
        "p50_ms": _pct(values, 50),
        "p99_ms": _pct(values, 99),
        "p999_ms": _pct(values, 99.9),
        "max_ms": round(max(values), 2) if values else None,
    }


class Bench:
    def __init__(self, env: dict[str, str], router_url: str, pids: dict[str, int]) -> None:
        self.pids = {**pids, "driver": os.getpid()}
        self.env = env
        self.endpoint = env["CALLGRID_ENDPOINT"]
        self.key = env["CALLGRID_ACCESS_KEY"]
        self.router_url = router_url
        self.arrivals: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.refused = 0
        self._caller: Http1Sender | None = None

    def _signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        headers = sign_request(method, path, urlsplit(self.endpoint).netloc, body, self.key, datetime.now(UTC))
        headers["Content-Type"] = "application/json"
        return headers

    def receive(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """The webhook subscribed to identities' calls (bare_http's handler): each IncomingCall's arrival."""
        now = time.perf_counter()
        events = orjson.loads(body)
        if headers.get(b"aeg-event-type") == b"SubscriptionValidation":
            return 200, orjson.dumps({"validationResponse": events[0]["data"]["validationCode"]})
        for event in events:
            call = event["data"]["serverCallId"]
            waiter = self.waiters.pop(call, None)
            if waiter is None:
                # Here before the answer to its placement was read (the driver's loop took the webhook's
                # bytes first): kept for `place` to find, not dropped as lost.
                self.arrivals[call] = now
            elif not waiter.done():
                waiter.set_result(now)
        return 200, b""

    def _client(self) -> Http1Sender:
        if self._caller is None:
            # The leanest HTTPS client here, callgrid's own delivery client: the less CPU the driver takes
            # of the two cores, the less it perturbs what it measures. (It does not check the certificate:
            # the server is callgrid on loopback.)
            self._caller = Http1Sender(max_connections=500, max_connections_per_host=500)
        return self._caller

    async def place(self, target: str) -> float | None:
        """A PSTN call placed (signed POST), then waited for until its IncomingCall reaches the webhook: ms."""
        body = json.dumps({"from": CALLER, "to": target}).encode()
        started = time.perf_counter()
        answer = await self._client().send(
            "POST",
            self.endpoint + "/callgrid/v1/calls",
            body=body,
            headers=self._signed("POST", "/callgrid/v1/calls", body),
            timeout=30,
        )
        if answer.status is None:
            return None  # no answer: lost
        if answer.status >= 400:  # 429 past capacity: refused before any work, so not lost
            self.refused += 1
            return None
        call = orjson.loads(answer.body)["serverCallId"]
        early = self.arrivals.pop(call, None)
        if early is not None:
            return (early - started) * 1000
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[call] = waiter
        try:
            async with asyncio.timeout(10):
                arrived = await waiter
        except TimeoutError:
            self.waiters.pop(call, None)
            return None
        return (arrived - started) * 1000

    async def close(self) -> None:
        if self._caller is not None:
            await self._caller.close()

    async def hop(self, which: str) -> float:
        """One bare request through the same client as `place`: a signed GET to callgrid, or the router's
        health check. ms."""
        caller = self._client()
        started = time.perf_counter()
        if which == "callgrid":
            path = "/callgrid/v1/clock"
            await caller.send("GET", self.endpoint + path, body=b"", headers=self._signed("GET", path, b""), timeout=30)
        else:
            await caller.send("GET", self.router_url + "/healthz", body=b"", headers={}, timeout=30)
        return (time.perf_counter() - started) * 1000

    async def steady(self, rate: float, seconds: float, make: Any, warmup: float = 0.0) -> tuple[list[float], int]:
        """Open loop: start one operation every 1/rate s regardless of how long earlier ones take. The
        first `warmup` seconds run at the same rate but are not counted, nor is their CPU. (A refusal
        answered to a warm-up operation after they end counts: conservative, and it fails the step.)"""
        tasks = []
        self.refused = 0
        first = int(rate * warmup)
        total = first + int(rate * seconds)
        cpu_before: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(total):
            if i == first:
                self.refused = 0
                cpu_before = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(make(i)))
        results = (await asyncio.gather(*tasks))[first:]
        self.last_refused = self.refused
        self.last_cpu_ms_per_op = {
            name: round((_cpu_seconds(pid) - cpu_before[name]) * 1000 / (total - first), 3)
            for name, pid in self.pids.items()
        }
        return [r for r in results if r is not None], total - first


async def _measure(bench: Bench, numbers: list[str], users: list[str], rate: float, seconds: float) -> dict[str, Any]:
    # Warm up connections, the router's SDK client and both stores.
    for i in range(20):
        await bench.place(numbers[i % len(numbers)])
        await bench.place(users[i % len(users)])
    direct, direct_n = await bench.steady(rate, seconds, lambda i: bench.place(users[i % len(users)]))
    direct_cpu, direct_refused = bench.last_cpu_ms_per_op, bench.last_refused
    routed, routed_n = await bench.steady(rate, seconds, lambda i: bench.place(numbers[i % len(numbers)]))
    routed_cpu, routed_refused = bench.last_cpu_ms_per_op, bench.last_refused
    cg, cg_n = await bench.steady(rate, min(seconds, 5), lambda i: bench.hop("callgrid"))
    rt, rt_n = await bench.steady(rate, min(seconds, 5), lambda i: bench.hop("router"))
    out = {
        "routed": _summary(routed, routed_n, routed_refused),
        "direct": _summary(direct, direct_n, direct_refused),
        "hops": {"callgrid_signed_request": _summary(cg, cg_n), "router_http_request": _summary(rt, rt_n)},
        # CPU per call of each process (all threads): steadier than latency on a shared machine.
        "cpu_ms_per_call": {"routed": routed_cpu, "direct": direct_cpu},
    }
    out["router_cost_ms"] = {
        "p50": round(out["routed"]["p50_ms"] - out["direct"]["p50_ms"], 2),
        "p99": round(out["routed"]["p99_ms"] - out["direct"]["p99_ms"], 2),
    }
    out["ratio_routed_vs_direct_p50"] = round(out["routed"]["p50_ms"] / out["direct"]["p50_ms"], 2)
    return out


async def _find_max(
    bench: Bench, numbers: list[str], rates: list[float], seconds: float, p99_ms: float, refine: int, warmup: float
) -> dict[str, Any]:
    """Routed phase only, rising rates: the highest that holds p99 <= p99_ms with nothing lost or refused.
    After the first rate that fails, `refine` bisections between it and the last that held. Each step is
    measured after `warmup` seconds at its rate."""
    bare, after_idle = await bare_http_round_trips_per_s()
    steps: list[dict[str, Any]] = []

    for i in range(40):  # warm up connections, the router's SDK client and both stores
        await bench.place(numbers[i % len(numbers)])

    async def step(rate: float) -> bool:
        values, sent = await bench.steady(
            rate, seconds, lambda i: bench.place(numbers[i % len(numbers)]), warmup=warmup
        )
        summary = _summary(values, sent, bench.last_refused)
        held = summary["p99_ms"] <= p99_ms and summary["lost"] == 0 and summary["refused"] == 0
        steps.append({"rate_per_s": rate, **summary, "held": held, "cpu_ms_per_call": bench.last_cpu_ms_per_op})
        print(f"find-max: {rate:g}/s p99 {summary['p99_ms']} ms, lost {summary['lost']}, "
              f"refused {summary['refused']}: {'held' if held else 'failed'}", file=sys.stderr)  # fmt: skip
        await asyncio.sleep(2)  # what an overloaded step left queued drains before the next
        return held

    best: float | None = None
    failed: float | None = None
    for rate in rates:
        if await step(rate):
            best = rate
        else:
            failed = rate
            break
    low = best or 0.0
    for _ in range(refine if failed is not None else 0):
        middle = float(round((low + failed) / 2 / 10) * 10)  # type: ignore[operator]
        if middle <= low or middle >= failed:  # type: ignore[operator]
            break
        if await step(middle):
            low = best = middle
        else:
            failed = middle
    at_best = next((s for s in steps if s["rate_per_s"] == best and s["held"]), None)
    return {
        "criterion": {
            "p99_ms_at_most": p99_ms,
            "lost": 0,
            "refused": 0,
            "seconds_per_step": seconds,
            "warmup_seconds_per_step": warmup,
        },
        "max_routed_calls_per_s": best,
        "first_failed_rate_per_s": failed,
        "bare_http_round_trips_per_s": round(bare),
        # The machine's wake-up: a bare round trip after the client and server sat idle this long.
        "machine": {"round_trip_after_idle_ms": after_idle},
        # Comparable across machines: the routed story's ceiling as a fraction of a bare HTTP round trip's.
        "max_routed_vs_bare_round_trips": round(best / bare, 4) if best else None,
        "cpu_ms_per_routed_call_at_max": at_best["cpu_ms_per_call"] if at_best else None,
        "steps": steps,
    }


# A do-nothing server: any method, any path (delivery_client.py POSTs to it too).
_BARE_SERVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application()
app.router.add_route("*", "/{path:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def bare_http_round_trips_per_s(seconds: float = 2.0, concurrency: int = 8) -> tuple[float, dict[str, float]]:
    """This machine's bare HTTP round trips per second: a do-nothing aiohttp server in its own process,
    driven closed-loop by this one over kept-alive plain-HTTP connections. A yardstick for the machine.
    Also the median of 5 single round trips after each of several idle times, in ms: where idle vCPUs halt
    (a VM), waking costs milliseconds, and the longer the idle, the more."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _BARE_SERVER, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait(url, None)
        done = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def worker(until: float) -> None:
                nonlocal done
                while time.perf_counter() < until:
                    async with session.get(url) as r:
                        await r.read()
                    done += 1

            await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(concurrency)))  # warm-up
            done = 0
            started = time.perf_counter()
            await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
            rate = done / (time.perf_counter() - started)
            after_idle: dict[str, float] = {}
            for idle in (0.001, 0.01, 0.1, 2.0):
                times = []
                for _ in range(5):
                    await asyncio.sleep(idle)
                    began = time.perf_counter()
                    async with session.get(url) as r:
                        await r.read()
                    times.append((time.perf_counter() - began) * 1000)
                after_idle[f"{idle:g}s"] = round(sorted(times)[2], 2)
            return rate, after_idle
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    parser.add_argument("--numbers", type=int, default=50, help="assigned numbers (one identity each)")
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="routed only, rising --rates: the highest with p99 <= --p99-ms, nothing lost or refused",
    )
    parser.add_argument("--rates", default="100,200,300,400,500,600,800,1000", help="--find-max's rates, rising")
    parser.add_argument("--p99-ms", type=float, default=25.0)
    parser.add_argument("--refine", type=int, default=2, help="--find-max's bisections after the first failure")
    parser.add_argument("--warmup", type=float, default=1.0, help="--find-max: seconds at each rate before measuring")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="route-latency-"))
    port, router_port, hook_port = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    finished = False
    try:
        log = (work / "callgrid.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "callgrid",
                    "serve",
                    "--data-dir",
                    str(work / "cg"),
                    "--port",
                    str(port),
                    "--ring-timeout",
                    "600",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        env_lines = _run("env", "--data-dir", str(work / "cg"), "--port", str(port))
        env = {**os.environ}
        for line in env_lines.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0]
        _wait(env["CALLGRID_ENDPOINT"] + "/calling/keys", env["REQUESTS_CA_BUNDLE"])
        os.environ.update({k: env[k] for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")})

        from azure.communication.identity import CommunicationIdentityClient

        identity = CommunicationIdentityClient.from_connection_string(env["CALLGRID_CONNECTION_STRING"])
        users = [str(identity.create_user().properties["id"]) for _ in range(args.numbers)]
        numbers = [f"+1425555{i:04d}" for i in range(args.numbers)]
        bench = Bench(env, f"http://127.0.0.1:{router_port}", {"callgrid": procs[0].pid})
        from callgrid.client import CallgridClient

        client = CallgridClient(env["CALLGRID_ENDPOINT"], env["CALLGRID_ACCESS_KEY"], Path(env["REQUESTS_CA_BUNDLE"]))
        db = work / "router.db"
        csv = work / "numbers.csv"
        csv.write_text("".join(f"{n},{u}\n" for n, u in zip(numbers, users, strict=True)))
        for n in numbers:
            client.own_number(n)
        _run("router", "import", str(csv), "--db", str(db), env=env)
        router_log = (work / "router.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "callgrid",
                    "router",
                    "serve",
                    "--db",
                    str(db),
                    "--port",
                    str(router_port),
                    "--public-url",
                    bench.router_url,
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=router_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait(bench.router_url + "/healthz", None)
        bench.pids["router"] = procs[1].pid
        _run("router", "subscribe", "--db", str(db), env=env)

        async def run() -> dict[str, Any]:
            hook = await bare_http.serve(bench.receive, "127.0.0.1", hook_port)
            try:
                await asyncio.to_thread(_identity_subscription, env, f"http://127.0.0.1:{hook_port}/identities")
                if args.find_max:
                    rates = [float(r) for r in args.rates.split(",")]
                    return await _find_max(bench, numbers, rates, args.seconds, args.p99_ms, args.refine, args.warmup)
                return await _measure(bench, numbers, users, args.rate, args.seconds)
            finally:
                await bench.close()
                hook.close()

        # The driver (caller and devices) on the same event loop as the servers use: it shares the two
        # cores with them, and the less of them it takes, the less it perturbs what it measures.
        load_before = os.getloadavg()
        result = _run_loop(run())
        if args.find_max:
            print(
                json.dumps(
                    {
                        "benchmark": "route_latency_find_max",
                        "assigned_numbers": args.numbers,
                        "store": "sqlite (callgrid and router)",
                        **result,
                        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                    },
                    indent=2,
                )
            )
            finished = True
            return
        result = {
            "benchmark": "route_latency",
            "rate_per_s": args.rate,
            "seconds_per_phase": args.seconds,
            "assigned_numbers": args.numbers,
            "store": "sqlite (callgrid and router)",
            **result,
            "target": {"routed_p99_ms": 25, "met": result["routed"]["p99_ms"] <= 25 and result["routed"]["lost"] == 0},
        }
        print(json.dumps(result, indent=2))
        finished = True
    finally:
        for p in reversed(procs):
            stop(p)
        # Both stores and both servers' logs: tens of MB a run, worth keeping only to see what went wrong.
        if finished:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"route_latency: servers' logs and stores kept in {work}", file=sys.stderr)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it is still there 15 s later."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _run_loop(main: Any) -> Any:
    try:
        import uvloop  # what callgrid's servers run on (uvicorn picks it up)
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _identity_subscription(env: dict[str, str], url: str) -> None:
    """Every identity's IncomingCall to the bench's webhook (ARM PUT, then wait for Succeeded)."""
    import requests

    arm = (
        f"{env['CALLGRID_ENDPOINT']}{env['CALLGRID_RESOURCE_ID']}"
        "/providers/Microsoft.EventGrid/eventSubscriptions/identities?api-version=2025-02-15"
    )
    headers = {"Authorization": f"Bearer {env['CALLGRID_ARM_TOKEN']}"}
    body = {
        "properties": {
            "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": url}},
            "filter": {
                "includedEventTypes": ["Microsoft.Communication.IncomingCall"],
                "advancedFilters": [{"operatorType": "StringBeginsWith", "key": "data.to.rawId", "values": ["8:acs:"]}],
            },
        }
    }
    requests.put(arm, json=body, headers=headers, timeout=10).raise_for_status()
    deadline = time.monotonic() + 15
    while requests.get(arm, headers=headers, timeout=10).json()["properties"]["provisioningState"] != "Succeeded":
        if time.monotonic() > deadline:
            raise RuntimeError("the identities subscription did not provision")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
