"""What the issue-15 benchmarks share: a real `callgrid serve` process in a temporary directory, its
environment (connection string, CA trust), identities, and a webhook subscribed to their IncomingCalls.

The driver (caller and webhook) is this process, as in route_latency.py, whose Bench it reuses.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bare_http
from route_latency import Bench, _free_port, _identity_subscription, _run, _wait, stop


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    work: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def serve_command(data_dir: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "callgrid", "serve", "--data-dir", str(data_dir), "--port", str(port), *extra]


def read_env(data_dir: Path, port: int) -> dict[str, str]:
    """`callgrid env` as a dict (it also creates the data directory's keys and CA, as the tests do first)."""
    env = {**os.environ}
    for line in _run("env", "--data-dir", str(data_dir), "--port", str(port)).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


@contextmanager
def callgrid(*extra: str, prefix: str = "callgrid-bench-") -> Iterator[Served]:
    """`callgrid serve` (system clock, SQLite) in a temporary directory, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    port = _free_port()
    env = read_env(work / "cg", port)
    log = (work / "callgrid.log").open("wb")
    proc = subprocess.Popen(serve_command(work / "cg", port, *extra), stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        _wait(env["CALLGRID_ENDPOINT"] + "/callgrid/v1/health", env["REQUESTS_CA_BUNDLE"])
        os.environ.update({k: env[k] for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")})
        yield Served(proc, env, work)
        ok = True
    finally:
        stop(proc)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"callgrid's log and store kept in {work}", file=sys.stderr)


def identities(served: Served, count: int) -> list[str]:
    from azure.communication.identity import CommunicationIdentityClient

    client = CommunicationIdentityClient.from_connection_string(served.env["CALLGRID_CONNECTION_STRING"])
    return [str(client.create_user().properties["id"]) for _ in range(count)]


@asynccontextmanager
async def identities_webhook(served: Served, pids: dict[str, int] | None = None) -> AsyncIterator[Bench]:
    """A Bench whose webhook (in this process) receives every identity's IncomingCall, subscribed via ARM."""
    hook_port = _free_port()
    bench = Bench(served.env, "", pids or {"callgrid": served.pid})
    hook = await bare_http.serve(bench.receive, "127.0.0.1", hook_port)
    try:
        await asyncio.to_thread(_identity_subscription, served.env, f"http://127.0.0.1:{hook_port}/identities")
        yield bench
    finally:
        await bench.close()
        hook.close()


def load() -> float:
    return round(os.getloadavg()[0], 2)


def percentiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2) if ordered else None

    return {"n": len(ordered), "p50_ms": pct(50), "p99_ms": pct(99), "p999_ms": pct(99.9)}
