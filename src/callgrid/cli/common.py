"""What every command shares: settings, the local resource, a signed client, and output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from callgrid.client import CallgridClient, CallgridHttpError
from callgrid.config import Settings
from callgrid.platform.keys import Keys, load_or_create_keys
from callgrid.platform.resource import CommunicationResource, load_or_create_resource
from callgrid.security import TlsMaterial, ensure_tls_material, issue_arm_token
from callgrid.store import StoreUnusable, open_store

console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", "-d", help="Where state lives.", envvar="CALLGRID_DATA_DIR")]
PortOption = Annotated[int | None, typer.Option("--port", "-p", help="The server's port (default: as last served).")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where state lives: sqlite:///path (default: callgrid.db in the data dir) or "
        "postgresql://user@host:port/db[?schema=NAME] to share it between several nodes.",
        envvar="CALLGRID_STORE",
        show_default=False,
    ),
]


@dataclass
class LocalState:
    settings: Settings
    resource: CommunicationResource
    tls: TlsMaterial | None
    keys: Keys
    store_location: str  # where state lives, without a password

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def connection_string(self) -> str:
        return self.resource.connection_string(self.endpoint)

    def arm_token(self) -> str:
        return issue_arm_token(self.keys.token_key, issuer=self.endpoint, now=datetime.now(UTC))

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


def settings_for(data_dir: Path, port: int | None, insecure: bool | None = None, **extra: Any) -> Settings:
    saved = saved_server(data_dir)
    overrides: dict[str, Any] = {"data_dir": data_dir, **extra}
    # A command beside a server uses the store that server was started with (server.json).
    if not overrides.get("store_url") and saved.get("store") and not Settings.from_env().store_url:
        overrides["store_url"] = saved["store"]
    overrides["port"] = port if port is not None else saved.get("port")
    if insecure is not None:
        overrides["tls"] = not insecure if insecure else saved.get("tls", True)
    elif "tls" in saved:
        overrides["tls"] = saved["tls"]
    return Settings.from_env(**overrides)


def saved_server(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "server.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return {}


def local_state(settings: Settings, *, verify_store: bool = False) -> LocalState:
    """The resource and TLS material of a data directory; a store that cannot be used ends the command
    with its message (exit 1), not a traceback."""

    async def load() -> tuple[CommunicationResource, Keys, str]:
        store = await open_store(settings.resolved_store_url, verify=verify_store)
        try:
            keys = await load_or_create_keys(store, settings.data_dir)
            async with store.transaction() as tx:
                resource = await load_or_create_resource(
                    tx,
                    name=settings.resource_name,
                    subscription_id=settings.subscription_id,
                    resource_group=settings.resource_group,
                )
            return resource, keys, store.location
        finally:
            await store.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        resource, keys, location = asyncio.run(load())
    except StoreUnusable as exc:
        err.print(f"[red]error[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    tls = ensure_tls_material(settings.data_dir / "tls") if settings.tls else None
    return LocalState(settings, resource, tls, keys, location)


def client_for(data_dir: Path, port: int | None) -> CallgridClient:
    return local_state(settings_for(data_dir, port)).client()


def fail(exc: Exception) -> NoReturn:
    if isinstance(exc, CallgridHttpError):
        err.print(f"[red]error[/red] {exc.code or exc.status}: {exc.message}")
    else:
        err.print(f"[red]error[/red] cannot reach callgrid: {exc}. Is `callgrid serve` running?")
    raise typer.Exit(1)
