"""`callgrid serve` and `callgrid env`."""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import Annotated, Any

import typer

from callgrid.cli.common import (
    DataDir,
    LocalState,
    PortOption,
    StoreOption,
    console,
    err,
    local_state,
    served_data_dir,
    settings_for,
)
from callgrid.config import DEFAULT_PORT
from callgrid.datadir import DataDirInUse, locate_data_dir, lock_data_dir

Port = Annotated[int, typer.Option("--port", "-p", help="Port on 127.0.0.1.", envvar="CALLGRID_PORT")]
Insecure = Annotated[bool, typer.Option("--insecure-http", help="Plain HTTP instead of TLS.")]


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(env)


def serve(
    data_dir: DataDir = None,
    port: Port = DEFAULT_PORT,
    insecure_http: Insecure = False,
    clock: Annotated[
        str, typer.Option(help="'system', or 'virtual' (tests move it via /callgrid/v1/clock).")
    ] = "system",
    ring_timeout: Annotated[float | None, typer.Option(help="Seconds an offer rings before it times out.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    sip_port: Annotated[
        int | None,
        typer.Option(help="Also take SIP (UDP and TCP) on this port: the Direct Routing trunk. Off by default."),
    ] = None,
    sip_allow: Annotated[
        str | None,
        typer.Option(help="Networks allowed to call in besides the configured trunks (default: loopback)."),
    ] = None,
    sip_transport: Annotated[
        str | None,
        typer.Option(help="Transport of the calls callgrid places over the trunks: udp (default) or tcp."),
    ] = None,
    sip_session_expires: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="RFC 4028 session timer (s): offered on calls out, the longest accepted on calls in; a call "
            "whose far end stops refreshing is ended with BYE (0: off; default 1800).",
        ),
    ] = None,
    sip_min_se: Annotated[
        int | None,
        typer.Option(min=90, help="Shortest session timer accepted (s): shorter is answered 422 (default 90)."),
    ] = None,
    recording_host: Annotated[
        str | None,
        typer.Option(
            help="Announce recording files on this host name (same port), e.g. callgrid.asm.skype.com with a "
            "hosts-file line for it: the SDK's download_recording (1.6+) fetches only from *.asm.skype.com.",
        ),
    ] = None,
    store: StoreOption = None,
    max_requests_in_flight: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Past this many requests in flight, answer 429 with Retry-After instead of queueing "
            "(0: no bound; default 256, or CALLGRID_MAX_REQUESTS_IN_FLIGHT).",
        ),
    ] = None,
) -> None:
    """Start callgrid: the ACS resource, its Event Grid system topic, and callgrid's own API."""
    from callgrid import http_server
    from callgrid.node import Node
    from callgrid.server import build_app

    if sip_transport is not None and sip_transport.lower() not in ("udp", "tcp"):
        err.print(f"[red]error[/red] --sip-transport must be udp or tcp, not '{sip_transport}'", highlight=False)
        raise typer.Exit(2)
    if sip_session_expires and sip_session_expires < (sip_min_se or 90):
        err.print("[red]error[/red] --sip-session-expires must be 0 (off) or at least --sip-min-se", highlight=False)
        raise typer.Exit(2)
    if recording_host is not None and not _HOST_NAME.fullmatch(recording_host):
        err.print(f"[red]error[/red] --recording-host must be a host name, not '{recording_host}'", highlight=False)
        raise typer.Exit(2)
    located = locate_data_dir(data_dir)
    settings = settings_for(
        located.path,
        port,
        insecure_http,
        clock=clock,
        ring_timeout_seconds=ring_timeout,
        sip_port=sip_port,
        sip_allow=sip_allow,
        sip_transport=sip_transport,
        sip_session_expires=sip_session_expires,
        sip_min_se=sip_min_se,
        store_url=store,
        max_requests_in_flight=max_requests_in_flight,
        recording_host=recording_host,
    )
    try:
        # Before anything is written to the data directory (server.json names the port clients use).
        lock = lock_data_dir(settings.data_dir, port=settings.port)
    except DataDirInUse as exc:
        err.print(f"[red]error[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = local_state(settings, verify_store=True)
    saved: dict[str, Any] = {"port": settings.port, "tls": settings.tls, "endpoint": settings.endpoint}
    if settings.store_url:
        saved["store"] = settings.store_url
    server_json = settings.data_dir / "server.json"
    server_json.touch(mode=0o600)  # the store URL may carry a password
    server_json.write_text(json.dumps(saved))
    _banner(state, located.how)
    node = Node(settings)
    ssl_args: dict[str, Any] = {}
    if state.tls is not None:
        ssl_args = {"ssl_certfile": str(state.tls.server_cert), "ssl_keyfile": str(state.tls.server_key)}
    try:
        http_server.run(
            build_app(node),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            headers_timeout=settings.request_headers_timeout_seconds,
            keep_alive=settings.keep_alive_timeout_seconds,
            # An idle TLS keep-alive connection (an SDK client's pool) is only closed once its peer answers
            # the close: without a limit, SIGTERM waited for clients that never did.
            graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            **ssl_args,
        )
    finally:
        lock.release()


SHUTDOWN_GRACE_SECONDS = 2
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def _banner(state: LocalState, how: str) -> None:
    s = state.settings
    console.rule("[bold]callgrid[/bold]")
    console.print(f"[bold]endpoint[/bold]           {state.endpoint}", soft_wrap=True)
    console.print(f"[bold]connection string[/bold]  {state.connection_string}", soft_wrap=True)
    console.print(f"[bold]resource id[/bold]        {state.resource.arm_id}", soft_wrap=True)
    console.print(
        f"[bold]state[/bold]              {state.store_location} (data dir {s.data_dir.resolve()})", soft_wrap=True
    )
    console.print(f"[bold]data dir chosen by[/bold] {how}", soft_wrap=True, highlight=False)
    console.print(f"[bold]clock[/bold]              {s.clock}", soft_wrap=True)
    console.print(f"[bold]console[/bold]            {state.console_url}", soft_wrap=True)
    console.print(f"[bold]console token[/bold]      {state.console_token()}", soft_wrap=True, highlight=False)
    if s.sip_port:
        console.print(
            f"[bold]sip trunk[/bold]          sip:{s.host}:{s.sip_port} (UDP and TCP in; calls out over "
            f"{s.sip_transport.upper()})",
            soft_wrap=True,
        )
    if state.tls is not None:
        console.print(
            "\nTrust callgrid's CA in the shell that runs your app (the bundle keeps the system roots):", soft_wrap=True
        )
        bundle = shlex.quote(str(state.tls.ca_bundle.resolve()))
        console.print(f"  export REQUESTS_CA_BUNDLE={bundle}", highlight=False, soft_wrap=True)
        console.print(f"  export SSL_CERT_FILE={bundle}", highlight=False, soft_wrap=True)
    console.print(
        f"\nAll variables: [bold]callgrid env --data-dir {shlex.quote(str(s.data_dir.resolve()))}[/bold] "
        "(or `callgrid env` where this data directory is found)\n",
        soft_wrap=True,
    )


def env(
    data_dir: DataDir = None,
    port: PortOption = None,
    resource: Annotated[
        str | None,
        typer.Option("--resource", "-r", help="Whose variables: a resource from `callgrid resources list`."),
    ] = None,
    sip_transport: Annotated[
        str | None,
        typer.Option(help="Transport of the calls callgrid places over the trunks: udp (default) or tcp."),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Print `export NAME=value` lines: connection string, resource id, ARM and ACS bearer tokens, CA trust."""
    located = locate_data_dir(data_dir)
    # A named data directory may be new (the test plugin prepares one before serving it); a found or default
    # one must be a server's, else the values printed would name keys and a CA that no server uses.
    where = located.path if located.explicit else served_data_dir(data_dir).path
    state = local_state(settings_for(where, port, store_url=store)).for_resource(resource)
    for name, value in state.env().items():
        print(f"export {name}={shlex.quote(value)}")
