"""The `callgrid` command: serve, env, numbers, identities, call, deliveries."""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from callgrid.client import CallgridClient, CallgridHttpError
from callgrid.config import DEFAULT_PORT, Settings
from callgrid.platform.resource import CommunicationResource, load_or_create_resource
from callgrid.security import TlsMaterial, ensure_tls_material, issue_arm_token, load_or_create_rsa_key
from callgrid.store import open_store

app = typer.Typer(help="callgrid: Azure Communication Services incoming calls and Event Grid, on one machine.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
numbers_app = typer.Typer(help="Phone numbers the resource owns.", no_args_is_help=True)
identities_app = typer.Typer(help="Communication identities.", no_args_is_help=True)
app.add_typer(numbers_app, name="numbers")
app.add_typer(identities_app, name="identities")

console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", "-d", help="Where state lives.", envvar="CALLGRID_DATA_DIR")]
Port = Annotated[int, typer.Option("--port", "-p", help="Port on 127.0.0.1.", envvar="CALLGRID_PORT")]
Insecure = Annotated[bool, typer.Option("--insecure-http", help="Plain HTTP instead of TLS.")]


@dataclass
class LocalState:
    settings: Settings
    resource: CommunicationResource
    tls: TlsMaterial | None

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def connection_string(self) -> str:
        return self.resource.connection_string(self.endpoint)

    def arm_token(self) -> str:
        key = load_or_create_rsa_key(self.settings.data_dir / "keys" / "token-signing.pem")
        return issue_arm_token(key, issuer=self.endpoint, now=datetime.now(UTC))

    def env(self) -> dict[str, str]:
        values = {
            "CALLGRID_ENDPOINT": self.endpoint,
            "CALLGRID_CONNECTION_STRING": self.connection_string,
            "CALLGRID_ACCESS_KEY": self.resource.access_key,
            "CALLGRID_RESOURCE_ID": self.resource.arm_id,
            "CALLGRID_IMMUTABLE_RESOURCE_ID": self.resource.immutable_id,
            "CALLGRID_ARM_TOKEN": self.arm_token(),
        }
        if self.tls is not None:
            bundle = str(self.tls.ca_bundle.resolve())
            # Sync SDK clients (requests) read REQUESTS_CA_BUNDLE; async ones (aiohttp) read SSL_CERT_FILE.
            values["REQUESTS_CA_BUNDLE"] = bundle
            values["SSL_CERT_FILE"] = bundle
        return values

    def client(self) -> CallgridClient:
        return CallgridClient(self.endpoint, self.resource.access_key, self.tls.ca_bundle if self.tls else None)


def _settings(data_dir: Path, port: int | None, insecure: bool | None = None, **extra: Any) -> Settings:
    saved = _saved_server(data_dir)
    overrides: dict[str, Any] = {"data_dir": data_dir, **extra}
    overrides["port"] = port if port is not None else saved.get("port")
    if insecure is not None:
        overrides["tls"] = not insecure if insecure else saved.get("tls", True)
    elif "tls" in saved:
        overrides["tls"] = saved["tls"]
    return Settings.from_env(**overrides)


def _saved_server(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "server.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return {}


def _local_state(settings: Settings) -> LocalState:
    async def load() -> CommunicationResource:
        store = await open_store(settings.resolved_store_url)
        try:
            async with store.transaction() as tx:
                return await load_or_create_resource(
                    tx,
                    name=settings.resource_name,
                    subscription_id=settings.subscription_id,
                    resource_group=settings.resource_group,
                )
        finally:
            await store.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    resource = asyncio.run(load())
    tls = ensure_tls_material(settings.data_dir / "tls") if settings.tls else None
    return LocalState(settings, resource, tls)


def _client(data_dir: Path, port: int | None) -> CallgridClient:
    return _local_state(_settings(data_dir, port)).client()


def _fail(exc: Exception) -> None:
    if isinstance(exc, CallgridHttpError):
        err.print(f"[red]error[/red] {exc.code or exc.status}: {exc.message}")
    else:
        err.print(f"[red]error[/red] cannot reach callgrid: {exc}. Is `callgrid serve` running?")
    raise typer.Exit(1)


@app.command()
def serve(
    data_dir: DataDir = Path(".callgrid"),
    port: Port = DEFAULT_PORT,
    insecure_http: Insecure = False,
    clock: Annotated[str, typer.Option(help="'system', or 'virtual' (tests move it via /callgrid/v1/clock).")]
    = "system",
    ring_timeout: Annotated[float | None, typer.Option(help="Seconds an offer rings before it times out.")]
    = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Start callgrid: the ACS resource, its Event Grid system topic, and callgrid's own API."""
    import uvicorn

    from callgrid.node import Node
    from callgrid.server import build_app

    settings = _settings(
        data_dir, port, insecure_http, clock=clock, ring_timeout_seconds=ring_timeout
    )
    state = _local_state(settings)
    (settings.data_dir / "server.json").write_text(
        json.dumps({"port": settings.port, "tls": settings.tls, "endpoint": settings.endpoint})
    )
    _banner(state)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = Node(settings)
    ssl_args: dict[str, Any] = {}
    if state.tls is not None:
        ssl_args = {"ssl_certfile": str(state.tls.server_cert), "ssl_keyfile": str(state.tls.server_key)}
    uvicorn.run(build_app(node), host=settings.host, port=settings.port, log_level=log_level, **ssl_args)


def _banner(state: LocalState) -> None:
    s = state.settings
    console.rule("[bold]callgrid[/bold]")
    console.print(f"[bold]endpoint[/bold]           {state.endpoint}")
    console.print(f"[bold]connection string[/bold]  {state.connection_string}")
    console.print(f"[bold]resource id[/bold]        {state.resource.arm_id}")
    console.print(f"[bold]state[/bold]              {s.resolved_store_url} (data dir {s.data_dir.resolve()})")
    console.print(f"[bold]clock[/bold]              {s.clock}")
    if state.tls is not None:
        console.print("\nTrust callgrid's CA in the shell that runs your app (the bundle keeps the system roots):")
        bundle = shlex.quote(str(state.tls.ca_bundle.resolve()))
        console.print(f"  export REQUESTS_CA_BUNDLE={bundle}", highlight=False, soft_wrap=True)
        console.print(f"  export SSL_CERT_FILE={bundle}", highlight=False, soft_wrap=True)
    console.print(f"\nAll variables: [bold]callgrid env --data-dir {shlex.quote(str(s.data_dir))}[/bold]\n")


@app.command()
def env(data_dir: DataDir = Path(".callgrid"), port: Annotated[int | None, typer.Option("--port", "-p")] = None) -> None:
    """Print `export NAME=value` lines: connection string, resource id, ARM token, CA trust."""
    state = _local_state(_settings(data_dir, port))
    for name, value in state.env().items():
        print(f"export {name}={shlex.quote(value)}")


@numbers_app.command("add")
def numbers_add(number: str, data_dir: DataDir = Path(".callgrid"),
                port: Annotated[int | None, typer.Option("--port", "-p")] = None) -> None:
    """Own a phone number (E.164)."""
    try:
        doc = _client(data_dir, port).own_number(number)
    except Exception as exc:
        _fail(exc)
    console.print(f"owned [bold]{doc['phoneNumber']}[/bold] ({doc['countryCode']}, {doc['phoneNumberType']})")


@numbers_app.command("list")
def numbers_list(data_dir: DataDir = Path(".callgrid"),
                 port: Annotated[int | None, typer.Option("--port", "-p")] = None) -> None:
    """List owned phone numbers."""
    try:
        page = _client(data_dir, port).list_numbers()["phoneNumbers"]
    except Exception as exc:
        _fail(exc)
    table = Table("phone number", "country", "type", "calling", "since")
    for n in page:
        table.add_row(n["phoneNumber"], n["countryCode"], n["phoneNumberType"], n["capabilities"]["calling"],
                      n["purchaseDate"])
    console.print(table)


@numbers_app.command("remove")
def numbers_remove(number: str, data_dir: DataDir = Path(".callgrid"),
                   port: Annotated[int | None, typer.Option("--port", "-p")] = None) -> None:
    """Release an owned phone number."""
    try:
        _client(data_dir, port).release_number(number)
    except Exception as exc:
        _fail(exc)
    console.print(f"released [bold]{number}[/bold]")


@identities_app.command("create")
def identities_create(
    data_dir: DataDir = Path(".callgrid"),
    port: Annotated[int | None, typer.Option("--port", "-p")] = None,
    answer: Annotated[bool, typer.Option("--answer", help="Its simulated device answers when it rings.")] = False,
) -> None:
    """Create a Communication identity (prints its raw id)."""
    try:
        client = _client(data_dir, port)
        user = client.request("POST", "/identities?api-version=2023-10-01")["identity"]["id"]
        if answer:
            client.set_endpoint(user, "answer")
    except Exception as exc:
        _fail(exc)
    print(user)


@app.command()
def call(
    source: Annotated[str, typer.Option("--from", help="Caller: a raw id or an E.164 number.")],
    target: Annotated[str, typer.Option("--to", help="Callee: an identity or an owned number.")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    watch: Annotated[float, typer.Option(help="Seconds to follow the call's timeline (0: don't).")] = 10.0,
    data_dir: DataDir = Path(".callgrid"),
    port: Annotated[int | None, typer.Option("--port", "-p")] = None,
) -> None:
    """Place a call: raises IncomingCall, then shows the call's timeline as it happens."""
    client = _client(data_dir, port)
    try:
        placed = client.place_call(source, target, display_name)
    except Exception as exc:
        _fail(exc)
    console.print(f"call [bold]{placed['serverCallId']}[/bold] placed: {source} → {target}")
    seen = 0
    deadline = time.monotonic() + watch
    started: float | None = None
    with console.status("ringing…") as status:
        while True:
            view = client.get_call(placed["serverCallId"])
            for entry in view["timeline"][seen:]:
                started = started if started is not None else entry["time"]
                console.print(_timeline_line(entry, started))
            seen = len(view["timeline"])
            status.update(f"{view['state']}…")
            if view["state"] != "ringing" or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    console.print(f"state: [bold]{view['state']}[/bold]")


def _timeline_line(entry: dict[str, Any], started: float) -> str:
    offset = entry["time"] - started
    detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("time", "event"))
    return f"  [dim]+{offset * 1000:7.1f} ms[/dim]  [bold]{entry['event']}[/bold]  {detail}"


@app.command()
def deliveries(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    data_dir: DataDir = Path(".callgrid"),
    port: Annotated[int | None, typer.Option("--port", "-p")] = None,
) -> None:
    """Recent deliveries (Event Grid and callbacks) and their attempts."""
    try:
        rows = _client(data_dir, port).deliveries(limit)["value"]
    except Exception as exc:
        _fail(exc)
    table = Table("kind", "status", "attempts", "last", "url", "event")
    for r in rows:
        last = f"{r['lastStatus'] or ''} {r['lastOutcome'] or ''}".strip()
        table.add_row(r["kind"], r["status"], str(r["attempts"]), last, r["url"], r["eventId"])
    console.print(table)


def main() -> None:
    app()
