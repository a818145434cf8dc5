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


class Demo:
    """`callgrid demo` in a process of its own, read until it prints its call line."""

    def __init__(self, data_dir: Path, port: int, router_port: int) -> None:
        args = ["demo", "--data-dir", str(data_dir), "--port", str(port), "--router-port", str(router_port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callgrid", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_ENV,
        )
        assert self.proc.stdout is not None
        self.output: list[str] = []
        self.children: list[str] = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("Ctrl-C stops both servers") for line in self.output):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("".join(self.output) + self.proc.stdout.read())
            self.output.append(self.proc.stdout.readline())

    def call(self) -> str:
        """Run the printed call line; returns what it showed."""
        call_line = next(line.strip() for line in self.output if " call --from " in line)
        called = subprocess.run(shlex.split(call_line), capture_output=True, text=True, env=_ENV, timeout=60)
        assert called.returncode == 0, called.stdout + called.stderr
        story = called.stdout
        # The whole story: the PSTN call, IncomingCall to the router, redirect, the identity's device answering.
        for step in ("callPlaced", "IncomingCall delivered", "redirected", "answered", "state: connected"):
            assert step in story, story
        return story

    def stop(self) -> None:
        self.children = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (alive := [pid for pid in self.children if "zombie" not in _state(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in alive:
            os.kill(int(pid), signal.SIGKILL)  # not left behind by a failing run
        assert not alive, f"servers {alive} outlived the demo"


def test_demo_routes_the_printed_call_and_stops_both_servers_on_sigterm(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "cg", free_port(), free_port())
    try:
        demo.call()
        children = subprocess.run(["pgrep", "-P", str(demo.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2, children  # `callgrid serve` and `callgrid router serve`
    finally:
        demo.stop()


def test_demo_rebuilds_its_resource_after_a_reset(tmp_path: Path) -> None:
    port, router_port = free_port(), free_port()
    demo = Demo(tmp_path / "cg", port, router_port)
    try:
        demo.call()
        where = ["--data-dir", str(tmp_path / "cg"), "--port", str(port)]
        reset = subprocess.run([sys.executable, "-m", "callgrid", "reset", *where], capture_output=True, text=True)
        assert reset.returncode == 0, reset.stdout + reset.stderr
    finally:
        demo.stop()
    # `make run` again, on the same ports: its identity, number, device and subscription are made anew.
    demo = Demo(tmp_path / "cg", port, router_port)
    try:
        demo.call()
    finally:
        demo.stop()


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
