"""Cold start (issue 15): from the `callgrid serve` command to the first request it accepts, in seconds.

Each run starts a new process and polls `GET /callgrid/v1/health` (which reads the store) every 5 ms
until it answers 200. Two cases: a data directory a server has used before (keys, CA and store exist:
the usual restart) and a new one (`serve` creates them). Baseline from the same run, measured the same way:
a do-nothing Starlette app under uvicorn over TLS with the same certificate (what any server of this stack
pays before its own code), so `ratio_vs_baseline` compares across machines.

Usage: python benchmarks/cold_start.py [--runs 5]
Prints JSON (median and best of the runs). Target: <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import load, read_env, rss_mb, serve_command
from route_latency import _free_port

_BASELINE_APP = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def health(request):
    return JSONResponse({"status": "ok"})
app = Starlette(routes=[Route("/callgrid/v1/health", health)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            ssl_certfile=sys.argv[2], ssl_keyfile=sys.argv[3])
"""


def _time_to_first_request(command: list[str], url: str, ca: str) -> tuple[float, float]:
    """Seconds from spawning `command` to its first 200 on `url`, and its RSS then (MB)."""
    context = ssl.create_default_context(cafile=ca)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(url, context=context, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started, rss_mb(proc.pid)
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command[:4]} exited with {proc.returncode}") from None
                if time.perf_counter() - started > 60:
                    raise
            time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(30)


def _stats(samples: list[tuple[float, float]]) -> dict[str, float]:
    seconds = [s for s, _ in samples]
    return {
        "median_s": round(statistics.median(seconds), 3),
        "best_s": round(min(seconds), 3),
        "rss_mb_at_first_request": round(statistics.median(r for _, r in samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    load_before = load()
    try:
        port = _free_port()
        used = work / "used"
        env = read_env(used, port)  # creates keys, CA and store, as a first `serve` would
        ca, tls = env["REQUESTS_CA_BUNDLE"], used / "tls"
        url = f"https://localhost:{port}/callgrid/v1/health"
        certificate = [str(tls / "server.pem"), str(tls / "server-key.pem")]
        baseline_cmd = [sys.executable, "-c", _BASELINE_APP, str(port), *certificate]
        baseline, restart, fresh = [], [], []
        for i in range(args.runs):  # interleaved: the machine's load swings touch all three alike
            baseline.append(_time_to_first_request(baseline_cmd, url, ca))
            restart.append(_time_to_first_request(serve_command(used, port), url, ca))
            new = work / f"new{i}"
            shutil.copytree(tls, new / "tls")  # the same CA (trusted here); keys and store are new
            fresh.append(_time_to_first_request(serve_command(new, port), url, ca))
        base = _stats(baseline)
        result = {
            "benchmark": "cold_start",
            "runs": args.runs,
            "baseline_starlette_uvicorn_tls": base,
            "callgrid_serve_used_data_dir": {
                **_stats(restart),
                "ratio_vs_baseline": round(statistics.median(s for s, _ in restart) / base["median_s"], 2),
            },
            "callgrid_serve_new_data_dir": {
                **_stats(fresh),
                "ratio_vs_baseline": round(statistics.median(s for s, _ in fresh) / base["median_s"], 2),
            },
            "target_s": 1.5,
            "load_before_after": [load_before, load()],
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
