"""`callgrid demo`: callgrid and the router together, with a resource ready to call (what `make run` starts).

Two processes, as in real life: `callgrid serve` plays ACS and Event Grid; `callgrid router serve` is the
application in front of it. The demo owns one number, assigns it to one identity whose device answers,
subscribes the router through ARM, and prints the `callgrid call` line that shows the whole story.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from callgrid.cli.common import DataDir, console, local_state, settings_for
from callgrid.client import CallgridHttpError
from callgrid.config import DEFAULT_PORT
from callgrid.datadir import locate_data_dir

DEMO_NUMBER = "+14255551212"
DEMO_CALLER = "+12065550100"


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option("--port", "-p", help="callgrid's port.")] = DEFAULT_PORT,
    router_port: Annotated[int, typer.Option(help="The router's port.")] = DEFAULT_PORT + 10,
    number: Annotated[str, typer.Option(help="The owned number to assign.")] = DEMO_NUMBER,
) -> None:
    """Start callgrid and the router with a demo resource; print a ready `callgrid call` line."""
    # A SIGTERM (a supervisor, `timeout`, `kill`) stops both servers too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    for what, taken in (("callgrid", port), ("the router", router_port)):
        if _in_use(taken):
            # Else the readiness probe would find the other server and call the demo ready.
            console.print(f"[red]Port {taken} ({what}) is in use[/red]: stop what runs there, or pass another port.")
            raise typer.Exit(1)
    data_dir = locate_data_dir(data_dir).path
    data_dir.mkdir(parents=True, exist_ok=True)
    callgrid_cmd = [sys.executable, "-m", "callgrid"]
    server = subprocess.Popen([*callgrid_cmd, "serve", "--data-dir", str(data_dir), "--port", str(port)])
    router: subprocess.Popen[bytes] | None = None
    try:
        state = local_state(settings_for(data_dir, port))
        env = {**os.environ, **state.env()}
        os.environ.update({k: v for k, v in env.items() if k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")})
        _wait(f"{state.endpoint}/calling/keys", server, state.env().get("REQUESTS_CA_BUNDLE"))
        client = state.client()
        user = _demo_identity(data_dir, state.connection_string)
        try:
            client.set_endpoint(user, "answer", 300)
        except CallgridHttpError as exc:
            if exc.status != 404:
                raise
            # The remembered identity is gone (`POST /callgrid/v1/reset`, `callgrid reset`): make a new one.
            user = _demo_identity(data_dir, state.connection_string, fresh=True)
            client.set_endpoint(user, "answer", 300)
        try:
            client.own_number(number)
        except CallgridHttpError as exc:
            if exc.status != 409:
                raise

        db = data_dir / "router" / "router.db"
        router_url = f"http://127.0.0.1:{router_port}"
        router_log = (data_dir / "router.log").open("ab")
        router_args = [*callgrid_cmd, "router", "serve", "--db", str(db), "--port", str(router_port)]
        router_args += ["--connection-string", state.connection_string, "--public-url", router_url]
        router_args += ["--jwt-audience", state.resource.immutable_id]
        subprocess.run([*callgrid_cmd, "router", "assign", number, user, "--db", str(db)], check=True, env=env)
        router = subprocess.Popen(router_args, env=env, stdout=router_log, stderr=subprocess.STDOUT)
        _wait(f"{router_url}/healthz", router, None)
        subscribed = subprocess.run(
            [*callgrid_cmd, "router", "subscribe", "--db", str(db), "--json"], env=env, capture_output=True, text=True
        )
        if subscribed.returncode != 0:
            raise RuntimeError(f"router subscribe failed: {subscribed.stderr}")
        console.rule("[bold]demo ready[/bold]")
        console.print(f"owned number       {number} → assigned to {user} (its device answers)", soft_wrap=True)
        console.print(f"router             {router_url} (log: {data_dir / 'router.log'}, state: {db})", soft_wrap=True)
        console.print("\nIn another shell, call the number from the public network:\n")
        exe = shlex.quote(str(Path(sys.executable).parent / "callgrid"))
        dd = shlex.quote(str(data_dir))
        console.print(
            f"  {exe} call --from {DEMO_CALLER} --to {number} --data-dir {dd}", highlight=False, soft_wrap=True
        )
        console.print(f"  {exe} router log --data-dir {dd}", highlight=False, soft_wrap=True)
        # The router answers this number only: a user's own app beside the demo takes another (README).
        console.print(
            f"\nYour own app beside the demo: give it another number than {number} (README: "
            "“Your app beside make run”).",
            soft_wrap=True,
        )
        console.print("\nCtrl-C stops both servers.")
        while server.poll() is None and router.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (router, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers bind: connections of a stopped run (TIME_WAIT) do not hold the port, a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait(url: str, proc: subprocess.Popen[bytes], ca_file: str | None, timeout: float = 30.0) -> None:
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise typer.Exit(1)
        try:
            with urllib.request.urlopen(url, context=context, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def _demo_identity(data_dir: Path, connection_string: str, *, fresh: bool = False) -> str:
    """The demo's identity, created once and remembered, so the assignment survives restarts."""
    saved = data_dir / "demo.json"
    try:
        if not fresh:
            return str(json.loads(saved.read_text())["identity"])
    except (OSError, ValueError, KeyError):
        pass
    from azure.communication.identity import CommunicationIdentityClient

    user = str(CommunicationIdentityClient.from_connection_string(connection_string).create_user().properties["id"])
    saved.write_text(json.dumps({"identity": user}))
    return user
