"""`callgrid clock show|advance|set` against real servers: a virtual clock moves, a system clock refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callgrid.testing import CallgridServer


def _run(server: CallgridServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _json(server: CallgridServer, *args: str) -> Any:
    result = _run(server, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_clock_show_advance_and_set(callgrid: CallgridServer) -> None:
    shown = _json(callgrid, "clock", "show")
    assert set(shown) == {"now", "epochSeconds", "virtual"} and shown["virtual"] is True
    assert abs(datetime.fromisoformat(shown["now"]).timestamp() - shown["epochSeconds"]) < 1e-3
    moved = _json(callgrid, "clock", "advance", "1h30m")
    assert moved["advancedSeconds"] == 5400
    assert abs(moved["epochSeconds"] - shown["epochSeconds"] - 5400) < 1e-3
    assert callgrid.clock.now() == moved["epochSeconds"]
    target = int(moved["epochSeconds"]) + 86400
    at = _json(callgrid, "clock", "set", datetime.fromtimestamp(target, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert at["epochSeconds"] == target
    assert at["now"] == datetime.fromtimestamp(target, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    offset = _json(
        callgrid, "clock", "set", datetime.fromtimestamp(target + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S+01:00")
    )
    assert offset["epochSeconds"] == target  # 10:00+01:00 is 09:00Z: no move
    human = _run(callgrid, "clock", "show")
    assert "(virtual clock)" in human.stdout and at["now"] in human.stdout


def test_clock_refuses_bad_durations_and_going_back(callgrid: CallgridServer) -> None:
    before = callgrid.clock.now()
    bad = _run(callgrid, "clock", "advance", "a while")
    assert bad.returncode == 2 and "'a while' is not a duration" in bad.stderr
    negative = _run(callgrid, "clock", "advance", "-5s")
    assert negative.returncode == 2
    not_a_time = _run(callgrid, "clock", "set", "tomorrow")
    assert not_a_time.returncode == 2 and "not an ISO 8601 time" in not_a_time.stderr
    back = _run(callgrid, "clock", "set", "2020-01-01T00:00:00Z")
    assert back.returncode == 1 and "does not go back to 2020-01-01T00:00:00.000Z" in back.stderr
    assert callgrid.clock.now() == before  # nothing moved


def test_a_system_clock_cannot_be_moved(tmp_path: Path, callgrid_tls_dir: Path) -> None:
    server = CallgridServer(tmp_path / "system", tls_dir=callgrid_tls_dir, clock="system").start()
    try:
        assert _json(server, "clock", "show")["virtual"] is False
        refused = _run(server, "clock", "advance", "10s")
        assert refused.returncode == 1
        assert "ClockNotVirtual" in refused.stderr and "--clock virtual" in refused.stderr
    finally:
        server.stop()
