"""Run `callgrid serve` as a real process on a free port, and talk to it the way users do."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from callgrid.client import CallgridClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CallgridProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        tls_dir: Path | None = None,
        clock: str = "virtual",
        ring_timeout: float | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.clock = clock
        self.ring_timeout = ring_timeout
        self.extra_args = extra_args or []
        self.server_env = env or {}  # extra CALLGRID_* settings for the server process
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "serve.log"
        self.env: dict[str, str] = {}
        data_dir.mkdir(parents=True, exist_ok=True)
        tls_dir = tls_dir or SESSION_TLS_DIR
        if tls_dir is not None and not (data_dir / "tls").exists():
            # Share one CA across test servers, so REQUESTS_CA_BUNDLE is set once per session.
            shutil.copytree(tls_dir, data_dir / "tls")

    def start(self) -> CallgridProcess:
        args = [
            sys.executable,
            "-m",
            "callgrid",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--clock",
            self.clock,
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        if self.ring_timeout is not None:
            args += ["--ring-timeout", str(self.ring_timeout)]
        # `env` first: it creates the data directory's keys and store, which `serve` then loads; run side
        # by side, both could create them (two signing keys, or a migration applied twice).
        self._load_env()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.server_env},
        )
        self._wait_ready()
        return self

    def _load_env(self) -> None:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "callgrid",
                "env",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        env = {}
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0]
        self.env = env

    def _wait_ready(self, timeout: float = 20.0) -> None:
        context = ssl.create_default_context(cafile=self.env["REQUESTS_CA_BUNDLE"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"callgrid exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/calling/keys", context=context, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"callgrid did not start:\n{self.log_path.read_text()}")

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def connection_string(self) -> str:
        return self.env["CALLGRID_CONNECTION_STRING"]

    @property
    def access_key(self) -> str:
        return self.env["CALLGRID_ACCESS_KEY"]

    @property
    def resource_id(self) -> str:
        return self.env["CALLGRID_RESOURCE_ID"]

    @property
    def arm_token(self) -> str:
        return self.env["CALLGRID_ARM_TOKEN"]

    @property
    def ca_bundle(self) -> str:
        return self.env["REQUESTS_CA_BUNDLE"]

    def client(self) -> CallgridClient:
        return CallgridClient(self.endpoint, self.access_key, Path(self.ca_bundle))

    def advance(self, seconds: float) -> Any:
        return self.client().request("POST", "/callgrid/v1/clock:advance", {"seconds": seconds})

    def reset(self) -> None:
        self.client().request("POST", "/callgrid/v1/reset")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, *, hard: bool = False) -> CallgridProcess:
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()


# Set by tests/conftest.py before any test module (or aiohttp) is imported: aiohttp builds its default
# SSL context once, at import, from SSL_CERT_FILE, so the CA must be trusted before that.
SESSION_TLS_DIR: Path | None = None


def trust_session_ca(directory: Path) -> None:
    """Make the official SDKs trust the session's CA, as callgrid's banner tells users to."""
    global SESSION_TLS_DIR
    SESSION_TLS_DIR = directory
    bundle = str(directory / "ca-bundle.pem")
    os.environ["REQUESTS_CA_BUNDLE"] = bundle
    os.environ["SSL_CERT_FILE"] = bundle


def sdk_env(server: CallgridProcess) -> None:
    """Every test server shares the session CA, so there is nothing to switch; kept for readability."""
    assert server.ca_bundle.endswith("ca-bundle.pem")
