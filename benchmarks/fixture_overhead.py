"""What the pytest plugin's fixtures cost a test (issue 18; target: at most 50 ms over a bare round trip):
a test that places a call and waits for its IncomingCall, against a bare HTTP round trip to the same
session-scoped server, in the same run.

Runs a small user project with pytest (the plugin loaded as a user's install loads it) and reads each test's
setup, call and teardown times from a JSON report written by a conftest hook:

  bare        GET /callgrid/v1/health on a kept-alive connection: the floor of any request to callgrid
  call        fixtures callgrid (a reset), webhook, subscribe (ARM PUT + handshake), then place_call and
              webhook.wait_for(IncomingCall): what a user's test of an incoming call costs, whole
  subscribed  place_call + wait_for(IncomingCall) in a test whose webhook and subscription a fixture of the
              user's own made once for the module (on `callgrid_server`, not reset between tests)
  call-only   place_call + wait_for inside the first kind of test, the fixtures' share left out
  session     the session's server start (the first test's setup)

Prints JSON: p50/p90/max in ms for each, and each test's p50 over the bare round trip's (`over_bare_ms`).
Usage: python benchmarks/fixture_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

CONFTEST = """
import json, time
import pytest

TIMES = {}

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    TIMES.setdefault(item.name, {})[call.when] = call.duration

def pytest_sessionfinish(session):
    with open("times.json", "w") as f:
        json.dump(TIMES, f)
"""

TESTS = """
import time
import pytest
import requests

RUNS = int(__import__("os").environ["RUNS"])
INNER = {}


@pytest.mark.parametrize("run", range(RUNS))
def test_bare(callgrid_server, run):
    with requests.Session() as http:
        http.get(callgrid_server.endpoint + "/callgrid/v1/health").raise_for_status()  # the connection
        began = time.perf_counter()
        http.get(callgrid_server.endpoint + "/callgrid/v1/health").raise_for_status()
        INNER.setdefault("bare", []).append(time.perf_counter() - began)


@pytest.fixture(scope="module")
def subscribed_webhook(callgrid_server):
    # A user's own wider fixture: one webhook, subscribed once, for every test of the module.
    from callgrid.testing import WebhookReceiver

    callgrid_server.reset()
    with WebhookReceiver() as hook:
        callgrid_server.subscribe(hook.url)
        yield hook


@pytest.mark.parametrize("run", range(RUNS))
def test_subscribed(callgrid_server, subscribed_webhook, run):
    callgrid_server.place_call("+12065550100", "+14255550123")
    subscribed_webhook.wait_for("Microsoft.Communication.IncomingCall")


@pytest.mark.parametrize("run", range(RUNS))
def test_call(callgrid, webhook, subscribe, place_call, run):
    began = time.perf_counter()
    subscribe(webhook.url)
    INNER.setdefault("subscribe", []).append(time.perf_counter() - began)
    began = time.perf_counter()
    place_call("+12065550100", "+14255550123")
    webhook.wait_for("Microsoft.Communication.IncomingCall")
    INNER.setdefault("call-only", []).append(time.perf_counter() - began)


def test_zz_report():
    import json
    with open("inner.json", "w") as f:
        json.dump(INNER, f)
"""


def _stats(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "p50": round(statistics.median(ms), 2),
        "p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "max": round(ms[-1], 2),
        "n": len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    registered = any(ep.value == "callgrid.testing.plugin" for ep in entry_points(group="pytest11"))
    with tempfile.TemporaryDirectory(prefix="callgrid-bench-") as d:
        project = Path(d)
        (project / "conftest.py").write_text(CONFTEST)
        (project / "test_overhead.py").write_text(TESTS)
        (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
        plugin = [] if registered else ["-p", "callgrid.testing.plugin"]
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin]
        env = {**os.environ, "RUNS": str(args.runs)}
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        times = json.loads((project / "times.json").read_text())
        inner = json.loads((project / "inner.json").read_text())
    first = "test_bare[0]"
    calls = [t for name, t in times.items() if name.startswith("test_call[")]
    # The first subscribed test also sets up the module's webhook and subscription: left out.
    subscribed = [t for name, t in times.items() if name.startswith("test_subscribed[") and not name.endswith("[0]")]
    report: dict[str, object] = {
        "bare": _stats(inner["bare"]),
        "subscribed": _stats([t["setup"] + t["call"] + t["teardown"] for t in subscribed]),
        "call": _stats([t["setup"] + t["call"] + t["teardown"] for t in calls]),
        "call-only": _stats(inner["call-only"]),
        "subscribe": _stats(inner["subscribe"]),
        "call-setup": _stats([t["setup"] for t in calls]),
        "call-teardown": _stats([t["teardown"] for t in calls]),
        "session": round(times[first]["setup"] * 1000, 1),
    }
    bare = report["bare"]["p50"]  # type: ignore[index]
    report["over_bare_ms"] = {
        name: round(report[name]["p50"] - bare, 2)  # type: ignore[index]
        for name in ("subscribed", "call", "call-only")
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
