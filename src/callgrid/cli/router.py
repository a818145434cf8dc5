"""`callgrid router ...`: the number-assignment application, against Azure or callgrid alike.

These commands use only callgrid.router (itself a plain SDK user), never callgrid's platform: the same
commands run in front of a real Communication resource. Their SQLite file is `--db`, else
`<data dir>/router/router.db` with the data directory every callgrid command finds (`callgrid.datadir`):
the one `callgrid demo` runs its router on. `--store postgresql://...` (CALLGRID_ROUTER_STORE) puts it in
PostgreSQL instead, where several `router serve` behind one webhook URL share it.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from callgrid.cli.options import AsJson, DataDir
from callgrid.datadir import locate_data_dir
from callgrid.router.assignments import import_csv, make_assignment
from callgrid.router.config import (
    DEFAULT_PORT,
    ConfigError,
    RouterConfig,
    default_arm_endpoint,
    endpoint_of,
)
from callgrid.router.identifiers import InvalidValue, caller, target
from callgrid.router.identifiers import phone_number as phone_number_of
from callgrid.router.models import Rules, Unassigned
from callgrid.router.store import RouterStore, open_router_store

router_app = typer.Typer(
    help="The router: assign phone numbers to identities and route IncomingCall at runtime (Azure or callgrid).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

Db = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="The router's SQLite file (default: router/router.db in the data directory).",
        envvar="CALLGRID_ROUTER_DB",
        show_default=False,
    ),
]
ConnectionString = Annotated[
    str,
    typer.Option(
        "--connection-string",
        help="The ACS resource's connection string (Azure portal > Keys, or `callgrid env`).",
        envvar=["CALLGRID_ROUTER_CONNECTION_STRING", "CALLGRID_CONNECTION_STRING"],
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The router's PostgreSQL store, postgresql://user@host:port/db[?schema=NAME] (default schema "
        "callgrid_router): several `router serve` on one database give the same answers. Instead of --db.",
        envvar="CALLGRID_ROUTER_STORE",
        show_default=False,
    ),
]
PublicUrl = Annotated[
    str | None,
    typer.Option(
        "--public-url",
        help="Where Event Grid and ACS reach the router (e.g. a dev tunnel).",
        envvar="CALLGRID_ROUTER_PUBLIC_URL",
    ),
]


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error[/red] {message}", highlight=False)
    raise typer.Exit(1)


def _db_path(db: Path | None, data_dir: Path | None) -> Path:
    return db if db is not None else locate_data_dir(data_dir).path / "router" / "router.db"


def _store(db: Path | None, data_dir: Path | None, store_url: str | None = None, *, create: bool = True) -> RouterStore:
    """The router's store; commands that only read it say so when there is none rather than make one."""
    if store_url:
        if db is not None:
            _fail("--db and --store name two stores: give one.")
        try:
            return open_router_store(store_url)
        except ValueError as exc:
            _fail(str(exc))
    path = _db_path(db, data_dir)
    if not create and not path.is_file():
        how = "--db" if db is not None else f"router/router.db in the data directory, {locate_data_dir(data_dir).how}"
        _fail(
            f"no router database at {path.resolve()} ({how}). `callgrid demo` (make run), `callgrid router serve` "
            "and `callgrid router assign` create one; or pass --db / --data-dir."
        )
    return RouterStore(path)


@router_app.command()
def serve(
    connection_string: ConnectionString,
    public_url: PublicUrl = None,
    port: Annotated[int, typer.Option("--port", "-p", envvar="CALLGRID_ROUTER_PORT")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
    jwt_audience: Annotated[
        str | None,
        typer.Option(
            help="Callback JWT audience: the resource's immutable id (a GUID).",
            envvar=["CALLGRID_ROUTER_JWT_AUDIENCE", "CALLGRID_IMMUTABLE_RESOURCE_ID"],
        ),
    ] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help="Callback JWT issuer (default: ACS's).")] = None,
    jwks_url: Annotated[
        str | None, typer.Option(help="JWKS for callback JWTs (default: Microsoft's, or the emulator's /calling/keys).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the router: Event Grid webhook, callback receiver, and management API."""
    import uvicorn

    from callgrid.router.app import build_app, open_state, webhook_url

    try:
        endpoint_of(connection_string)
    except ConfigError as exc:
        _fail(str(exc))
    extra: dict[str, Any] = {"jwt_issuer": jwt_issuer} if jwt_issuer else {}
    if store_url and db is not None:
        _fail("--db and --store name two stores: give one.")
    db = _db_path(db, data_dir)
    config = RouterConfig(
        connection_string=connection_string,
        db=db,
        store=store_url or None,
        host=host,
        port=port,
        public_url=public_url,
        jwt_audience=jwt_audience,
        jwks_url=jwks_url,
        **extra,
    )
    try:
        state = open_state(config)
    except ValueError as exc:
        _fail(str(exc))
    console.rule("[bold]callgrid router[/bold]")
    console.print(f"[bold]ACS endpoint[/bold]   {config.acs_endpoint}")
    console.print(f"[bold]listening[/bold]      {config.local_url}")
    console.print(f"[bold]webhook[/bold]        {webhook_url(config.base_url, state.webhook_secret)}", soft_wrap=True)
    console.print(
        f"[bold]state[/bold]          {state.store.location} ({state.store.count_assignments()} assignments)",
        soft_wrap=True,
    )
    console.print(f"[bold]callback JWKS[/bold]  {config.resolved_jwks_url} (audience {jwt_audience or 'not set'})")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    app = build_app(state)
    # What is alive now (modules, the SDK's and the app's objects) lives as long as the process: out of the
    # collector's view, a full collection walks only what serving allocates (less CPU per routed call).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level="warning")


@router_app.command()
def assign(
    phone_number: Annotated[str, typer.Argument(help="E.164 number, e.g. +14255551212.")],
    identity: Annotated[str, typer.Argument(help="The ACS identity's raw id (8:acs:...).")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Assign a number to an identity (replaces an earlier assignment of the number)."""
    try:
        a = make_assignment(phone_number, identity, display_name)
    except InvalidValue as exc:
        _fail(f"{exc} Nothing was stored.")
    created = _store(db, data_dir, store_url).assign(a)
    console.print(
        f"{'assigned' if created else 'reassigned'} [bold]{a.phone_number}[/bold] → {a.identity}", soft_wrap=True
    )


@router_app.command()
def unassign(phone_number: str, db: Db = None, store_url: StoreUrl = None, data_dir: DataDir = None) -> None:
    """Remove a number's assignment."""
    try:
        number = phone_number_of(phone_number)
    except InvalidValue as exc:
        _fail(str(exc))
    if not _store(db, data_dir, store_url).unassign(number):
        _fail(f"{number} is not assigned.")
    console.print(f"unassigned [bold]{number}[/bold]")


@router_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    after: Annotated[str, typer.Option(help="Start after this number (paging).")] = "",
    as_json: AsJson = False,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List assignments in number order."""
    store = _store(db, data_dir, store_url, create=False)
    page = store.assignments(after=after, limit=limit)
    if as_json:
        print(json.dumps([a.view() for a in page], indent=2))
        return
    table = Table("phone number", "identity", "display name", title=f"{store.count_assignments()} assignment(s)")
    for a in page:
        table.add_row(a.phone_number, a.identity, a.display_name or "")
    console.print(table)


@router_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV: phoneNumber,identity[,displayName]; header row optional.")],
    all_or_nothing: Annotated[
        bool, typer.Option("--all-or-nothing/--skip-bad", help="Any bad row stops the import, or skip bad rows.")
    ] = True,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Import assignments from a CSV file; every bad row is reported with its line number."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}")
    report = import_csv(_store(db, data_dir, store_url), text, all_or_nothing=all_or_nothing)
    for e in report.errors:
        err.print(f"[red]{file}:{e.line}[/red] {e.message}", highlight=False)
    if report.errors and not report.applied:
        _fail(f"{len(report.errors)} bad row(s) of {report.rows}; nothing was imported (--skip-bad imports the rest).")
    console.print(
        f"imported {report.rows - len(report.errors)} of {report.rows} row(s): {report.created} new, "
        f"{report.updated} changed, {report.unchanged} unchanged"
        + (f"; skipped {len(report.errors)} bad row(s)" if report.errors else "")
    )
    if report.errors:
        raise typer.Exit(2)


@router_app.command()
def rules(
    unassigned: Annotated[Unassigned | None, typer.Option(help="What happens to calls for unassigned numbers.")] = None,
    fallback: Annotated[
        str | None, typer.Option(help="Fallback target: an identity (8:acs:...) or an E.164 number.")
    ] = None,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Remove the fallback target.")] = False,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Show or change the routing rules."""
    store = _store(db, data_dir, store_url)
    current = store.rules()
    new_fallback = None if no_fallback else current.fallback
    if fallback is not None:
        try:
            new_fallback = target(fallback)
        except InvalidValue as exc:
            _fail(f"{exc} Nothing was changed.")
    updated = Rules(unassigned=unassigned or current.unassigned, fallback=new_fallback)
    if updated.unassigned is Unassigned.FALLBACK and not updated.fallback:
        _fail("--unassigned fallback needs a --fallback target. Nothing was changed.")
    if updated != current:
        store.set_rules(updated)
    console.print(f"unassigned numbers: [bold]{updated.unassigned.value}[/bold]")
    console.print(f"fallback target:    [bold]{updated.fallback or '(none)'}[/bold]")


@router_app.command()
def block(
    number_or_id: Annotated[str, typer.Argument(metavar="CALLER", help="E.164 number or raw id.")],
    note: Annotated[str | None, typer.Option()] = None,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Reject calls from this caller as forbidden."""
    try:
        key = caller(number_or_id)
    except InvalidValue as exc:
        _fail(str(exc))
    _store(db, data_dir, store_url).block(key, note)
    console.print(f"blocked [bold]{key}[/bold]")


@router_app.command()
def unblock(
    number_or_id: Annotated[str, typer.Argument(metavar="CALLER")],
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Take a caller off the block list."""
    try:
        key = caller(number_or_id)
    except InvalidValue as exc:
        _fail(str(exc))
    if not _store(db, data_dir, store_url).unblock(key):
        _fail(f"{key} is not blocked.")
    console.print(f"unblocked [bold]{key}[/bold]")


@router_app.command()
def blocked(as_json: AsJson = False, db: Db = None, store_url: StoreUrl = None, data_dir: DataDir = None) -> None:
    """The block list."""
    rows = _store(db, data_dir, store_url, create=False).blocked()
    if as_json:
        print(json.dumps([{"caller": key, "note": note} for key, note in rows], indent=2))
        return
    for key, note in rows:
        console.print(f"{key}  {note or ''}", highlight=False)


@router_app.command()
def log(
    limit: Annotated[int, typer.Option(help="How many decisions, newest first.")] = 20,
    event_id: Annotated[str | None, typer.Option("--event-id")] = None,
    server_call_id: Annotated[str | None, typer.Option("--server-call-id")] = None,
    as_json: AsJson = False,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """The decision log: each IncomingCall, the rule that fired, and every SDK call's outcome."""
    rows = _store(db, data_dir, store_url, create=False).decisions(
        limit=limit, event_id=event_id, server_call_id=server_call_id
    )
    if as_json:
        print(json.dumps([d.view() for d in rows], indent=2))
        return
    for d in reversed(rows):
        when = datetime.fromtimestamp(d.received_at).strftime("%H:%M:%S.%f")[:-3]
        dup = f" [yellow](delivered {d.deliveries}x, acted once)[/yellow]" if d.deliveries > 1 else ""
        console.print(
            f"{when}  [bold]{d.rule or '-'}[/bold]  {d.caller} → {d.callee}  {d.outcome or d.state}{dup}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    event {d.event_id}  call {d.server_call_id}", style="dim", highlight=False, soft_wrap=True)
        for a in d.actions:
            result = (
                "[green]ok[/green]"
                if a.ok
                else f"[red]{a.status or ''} {a.error_code or ''}[/red] {a.error_message or ''}"
            )
            what = a.target if a.action == "redirect" else a.reason
            console.print(f"    {a.action} {what}: {result} ({a.elapsed_ms:.1f} ms)", highlight=False, soft_wrap=True)


@router_app.command()
def info(db: Db = None, store_url: StoreUrl = None, data_dir: DataDir = None, public_url: PublicUrl = None) -> None:
    """The router's webhook URL (with its secret) and API key, for scripts and Event Grid."""
    from callgrid.router.app import webhook_url

    store = _store(db, data_dir, store_url, create=False)
    base = public_url or store.meta("public_url") or f"http://127.0.0.1:{DEFAULT_PORT}"
    print(f"webhook_url={webhook_url(base, store.secret('webhook_secret'))}")
    print(f"api_key={store.secret('api_key')}")
    print(f"db={store.location}")


@router_app.command()
def subscribe(
    resource_id: Annotated[
        str,
        typer.Option(
            help="The Communication resource's ARM id.", envvar=["CALLGRID_ROUTER_RESOURCE_ID", "CALLGRID_RESOURCE_ID"]
        ),
    ],
    connection_string: Annotated[
        str | None,
        typer.Option(
            "--connection-string",
            help="Used to choose the ARM endpoint (Azure's, or the emulator's).",
            envvar=["CALLGRID_ROUTER_CONNECTION_STRING", "CALLGRID_CONNECTION_STRING"],
        ),
    ] = None,
    arm_endpoint: Annotated[
        str | None, typer.Option(help="Azure Resource Manager endpoint (default: from the connection string).")
    ] = None,
    arm_token: Annotated[
        str | None,
        typer.Option(
            help="ARM bearer token (az account get-access-token); else azure-identity's DefaultAzureCredential.",
            envvar=["CALLGRID_ROUTER_ARM_TOKEN", "CALLGRID_ARM_TOKEN"],
        ),
    ] = None,
    public_url: PublicUrl = None,
    scope: Annotated[
        str, typer.Option(help="assigned | numbers | all: which IncomingCall events to receive.")
    ] = "assigned",
    prefix: Annotated[str, typer.Option(help="Subscription names: <prefix>-001, ...")] = "callgrid-router",
    cloud_events: Annotated[bool, typer.Option("--cloud-events", help="CloudEvents 1.0 delivery schema.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite every subscription (e.g. after a new secret).")
    ] = False,
    as_json: AsJson = False,
    db: Db = None,
    store_url: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create or update the router's Event Grid subscriptions (25 numbers each), delete stale ones."""
    from azure.core.exceptions import AzureError

    from callgrid.router.app import webhook_url
    from callgrid.router.subscribe import Scope, SubscribeError, Subscriber, credential_for

    store = _store(db, data_dir, store_url)
    try:
        chosen = Scope(scope)
    except ValueError:
        _fail("--scope must be assigned, numbers or all.")
    if arm_endpoint is None:
        if connection_string is None:
            _fail("pass --arm-endpoint, or --connection-string to derive it.")
        try:
            arm_endpoint = default_arm_endpoint(endpoint_of(connection_string))
        except ConfigError as exc:
            _fail(str(exc))
    base = public_url or store.meta("public_url")
    if not base:
        _fail("pass --public-url (where Event Grid reaches the router), or start `router serve --public-url` once.")
    url = webhook_url(base, store.secret("webhook_secret"))
    numbers = store.assigned_numbers()
    try:
        subscriber = Subscriber(
            resource_id=resource_id,
            arm_endpoint=arm_endpoint,
            credential=credential_for(arm_token),
            prefix=prefix,
            cloud_events=cloud_events,
        )
        plan = subscriber.sync(numbers, scope=chosen, webhook_url=url, force=force)
    except SubscribeError as exc:
        _fail(str(exc))
    except AzureError as exc:
        _fail(f"Azure Resource Manager: {exc}")
    if as_json:
        print(json.dumps({"numbers": len(numbers), **plan.view()}, indent=2))
        return
    console.print(
        f"{len(numbers)} assigned number(s), scope {chosen.value}: {len(plan.put)} subscription(s) written, "
        f"{len(plan.unchanged)} unchanged, {len(plan.delete)} deleted"
    )
    for name in sorted(plan.put):
        console.print(f"  put     {name}", highlight=False)
    for name in sorted(plan.delete):
        console.print(f"  delete  {name}", highlight=False)


def main() -> None:  # pragma: no cover - `python -m callgrid.cli.router` for debugging
    router_app(sys.argv[1:])
