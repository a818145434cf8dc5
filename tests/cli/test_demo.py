"""The README's run command: callgrid and the router with a demo number, and the call line it prints."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from callgrid.testing import free_port

_ENV = {**os.environ, "COLUMNS": "250"}  # rich would fold long lines on an 80-column pipe


def test_demo_routes_the_printed_call_and_stops_both_servers_on_sigterm(tmp_path: Path) -> None:
    port, router_port = free_port(), free_port()
    args = ["demo", "--data-dir", str(tmp_path / "cg"), "--port", str(port), "--router-port", str(router_port)]
    demo = subprocess.Popen(
        [sys.executable, "-m", "callgrid", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_ENV,
    )
    assert demo.stdout is not None
    output: list[str] = []
    children: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("Ctrl-C stops both servers") for line in output):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(output)
            output.append(demo.stdout.readline())
        call_line = next(line.strip() for line in output if " call --from " in line)
        called = subprocess.run(shlex.split(call_line), capture_output=True, text=True, env=_ENV, timeout=60)
        assert called.returncode == 0, called.stdout + called.stderr
        story = called.stdout
        # The whole story: the PSTN call, IncomingCall to the router, redirect, the identity's device answering.
        for step in ("callPlaced", "IncomingCall delivered", "redirected", "answered", "state: connected"):
            assert step in story, story
        children = subprocess.run(["pgrep", "-P", str(demo.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2, children  # `callgrid serve` and `callgrid router serve`
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (alive := [pid for pid in children if "zombie" not in _state(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        os.kill(int(pid), signal.SIGKILL)  # not left behind by a failing run
    assert not alive, f"servers {alive} outlived the demo"


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_demo_refuses_a_port_already_in_use(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        args = ["demo", "--data-dir", str(tmp_path / "cg"), "--port", str(port), "--router-port", str(free_port())]
        result = subprocess.run(
            [sys.executable, "-m", "callgrid", *args], capture_output=True, text=True, timeout=60, env=_ENV
        )
    assert result.returncode == 1
    assert f"Port {port} (callgrid) is in use" in result.stdout
    assert not (tmp_path / "cg").exists()  # nothing started, nothing written
