"""`callgrid reset` and `callgrid health`: start a running server over, or ask whether it is up."""

from __future__ import annotations

import typer

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, fail, print_json


def register(app: typer.Typer) -> None:
    app.command()(reset)
    app.command()(health)


def reset(data_dir: DataDir = None, port: PortOption = None) -> None:
    """Forget calls, identities, numbers, subscriptions and deliveries; the resource and its keys stay."""
    try:
        client_for(data_dir, port).request("POST", "/callgrid/v1/reset")
    except Exception as exc:
        fail(exc)
    console.print("callgrid reset: the resource is empty again.")


def health(as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """Ask the running server whether it is up (exit status 1 if it does not answer)."""
    try:
        status = client_for(data_dir, port).request("GET", "/callgrid/v1/health")
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(status)
        return
    console.print(f"{status['status']}: callgrid {status['version']}, clock {status['clock']}")
