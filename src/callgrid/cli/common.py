"""What every command shares: settings, the local resource, a signed client, and output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from callgrid.cli.options import AsJson as AsJson  # re-exported: the command modules import them from here
from callgrid.cli.options import DataDir as DataDir
from callgrid.cli.options import PortOption as PortOption
from callgrid.cli.options import StoreOption as StoreOption
from callgrid.client import CallgridClient, CallgridHttpError, CallgridUnreachable
from callgrid.config import Settings
from callgrid.datadir import DATA_DIR_ENV, LocatedDataDir, locate_data_dir
from callgrid.platform.keys import Keys, load_or_create_keys
from callgrid.platform.resource import CommunicationResource, load_or_create_resource, load_resources
from callgrid.security import (
    TlsMaterial,
    ensure_tls_material,
    issue_arm_token,
    issue_entra_token,
    load_or_create_token,
)
from callgrid.store import StoreUnusable, open_store

console = Console()
err = Console(stderr=True)


# The tokens `callgrid env` prints serve scripts and test sessions (whose virtual clock may run days
# ahead), so they last as long as the ARM token always has; `callgrid token` mints Entra ID's hour.
ARM_TOKEN_LIFETIME = timedelta(days=365)
ENV_ACS_TOKEN_LIFETIME = timedelta(days=365)


@dataclass
class LocalState:
    settings: Settings
    resource: CommunicationResource  # the default one, unless `for_resource` chose another
    tls: TlsMaterial | None
    keys: Keys
    store_location: str  # where state lives, without a password
    others: tuple[CommunicationResource, ...] = ()

    def for_resource(self, name: str | None) -> LocalState:
        """The same state seen as the resource `name` (None: the default); an unknown name ends the command."""
        if name is None or name.lower() == self.resource.name.lower():
            return self
        found = next((r for r in self.others if r.name.lower() == name.lower()), None)
        if found is None:
            known = ", ".join([self.resource.name, *(r.name for r in self.others)])
            err.print(f"[red]error[/red] no Communication resource named '{name}' (known: {known})", soft_wrap=True)
            raise typer.Exit(1)
        return LocalState(self.settings, found, self.tls, self.keys, self.store_location, self.others)

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def connection_string(self) -> str:
        return self.resource.connection_string(self.endpoint)

    @property
    def console_url(self) -> str:
        return f"{self.endpoint}/console"

    def console_token(self) -> str:
        return load_or_create_token(self.settings.data_dir / "keys" / "console-token")

    def arm_token(self, lifetime: timedelta = ARM_TOKEN_LIFETIME) -> str:
        return issue_arm_token(
            self.keys.token_key,
            issuer=self.endpoint,
            now=datetime.now(UTC),
            lifetime=lifetime,
            subject=self.resource.arm_subject,
        )

    def acs_token(self, lifetime: timedelta = ENV_ACS_TOKEN_LIFETIME) -> str:
        """An Entra ID-shaped bearer token for the resource's ACS routes (api/auth.py checks it)."""
        return issue_entra_token(
            self.keys.token_key,
            issuer=self.endpoint,
            resource_id=self.resource.immutable_id,
            now=datetime.now(UTC),
            lifetime=lifetime,
        )

    def env(self) -> dict[str, str]:
        values = {
            "CALLGRID_ENDPOINT": self.endpoint,
            "CALLGRID_CONNECTION_STRING": self.connection_string,
            "CALLGRID_ACCESS_KEY": self.resource.access_key,
            "CALLGRID_SECONDARY_ACCESS_KEY": self.resource.secondary_key,
            "CALLGRID_RESOURCE_NAME": self.resource.name,
            "CALLGRID_RESOURCE_ID": self.resource.arm_id,
            "CALLGRID_IMMUTABLE_RESOURCE_ID": self.resource.immutable_id,
            "CALLGRID_ARM_TOKEN": self.arm_token(),
            "CALLGRID_ACS_TOKEN": self.acs_token(),
            "CALLGRID_CONSOLE_URL": self.console_url,
            "CALLGRID_CONSOLE_TOKEN": self.console_token(),
        }
        if self.tls is not None:
            bundle = str(self.tls.ca_bundle.resolve())
            # Sync SDK clients (requests) read REQUESTS_CA_BUNDLE; async ones (aiohttp) read SSL_CERT_FILE.
            values["REQUESTS_CA_BUNDLE"] = bundle
            values["SSL_CERT_FILE"] = bundle
        return values

    def client(self) -> CallgridClient:
        return CallgridClient(self.endpoint, self.resource.access_key, self.tls.ca_bundle if self.tls else None)


def settings_for(data_dir: Path | None, port: int | None, insecure: bool | None = None, **extra: Any) -> Settings:
    """Settings for a command that may create its data directory (`serve`, `demo`, `env --data-dir`)."""
    data_dir = locate_data_dir(data_dir).path
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

    async def load() -> tuple[CommunicationResource, list[CommunicationResource], Keys, str]:
        store = await open_store(settings.resolved_store_url, verify=verify_store)
        try:
            keys = await load_or_create_keys(store, settings.data_dir)
            async with store.transaction() as tx:
                default = await load_or_create_resource(
                    tx,
                    name=settings.resource_name,
                    subscription_id=settings.subscription_id,
                    resource_group=settings.resource_group,
                )
                others = await load_resources(tx)
            return default, others, keys, store.location
        finally:
            await store.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        resource, others, keys, location = asyncio.run(load())
    except StoreUnusable as exc:
        err.print(f"[red]error[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    tls = ensure_tls_material(settings.data_dir / "tls", settings.tls_hostnames) if settings.tls else None
    return LocalState(settings, resource, tls, keys, location, tuple(others))


def served_data_dir(data_dir: Path | None) -> LocatedDataDir:
    """The data directory of a server that has run, or exit 1 saying where we looked and what to do.

    Client commands never create one: a new data directory would mean a new CA and keys that no running
    server knows, and every request would then fail in a less helpful way.
    """
    located = locate_data_dir(data_dir)
    if not (located.path / "server.json").is_file():
        err.print(
            f"[red]error[/red] no callgrid server has run with the data directory {located.path.resolve()} "
            f"({located.how}).\nStart one with `callgrid serve` (or `make run` in the repository), or name the "
            f"data directory of a running one: --data-dir DIR or {DATA_DIR_ENV}=DIR.",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(1)
    return located


def existing_state(data_dir: Path | None, port: int | None) -> LocalState:
    """What a client command needs of a data directory that a server has used."""
    return local_state(settings_for(served_data_dir(data_dir).path, port))


def client_for(data_dir: Path | None, port: int | None) -> CallgridClient:
    return existing_state(data_dir, port).client()


def fail(exc: Exception) -> NoReturn:
    if isinstance(exc, typer.Exit):  # already said why (e.g. `served_data_dir`) inside a command's `try`
        raise exc
    if isinstance(exc, CallgridHttpError):
        err.print(f"[red]error[/red] {exc.code or exc.status}: {exc.message}", soft_wrap=True, highlight=False)
    elif isinstance(exc, CallgridUnreachable):
        err.print(
            f"[red]error[/red] cannot reach callgrid at {exc.endpoint} ({exc.reason}). Is `callgrid serve` running?",
            soft_wrap=True,
            highlight=False,
        )
    else:
        err.print(f"[red]error[/red] cannot reach callgrid: {exc}. Is `callgrid serve` running?", highlight=False)
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    """--json output: plain JSON on stdout (no colour codes), keys as the server spells them."""
    print(json.dumps(data, indent=2, sort_keys=True))
