"""`callgrid identities create|list`: Communication identities."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, fail, print_json
from callgrid.cli.devices import describe

identities_app = typer.Typer(help="Communication identities.", no_args_is_help=True)


@identities_app.command("create")
def identities_create(
    data_dir: DataDir = None,
    port: PortOption = None,
    answer: Annotated[bool, typer.Option("--answer", help="Its simulated device answers when it rings.")] = False,
) -> None:
    """Create a Communication identity (prints its raw id)."""
    try:
        client = client_for(data_dir, port)
        user = client.request("POST", "/identities?api-version=2023-10-01")["identity"]["id"]
        if answer:
            client.set_endpoint(user, "answer")
    except Exception as exc:
        fail(exc)
    print(user)


@identities_app.command("list")
def identities_list(
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1, max=1000)] = 100,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """The resource's identities, newest first, with what each one's simulated device does."""
    try:
        client = client_for(data_dir, port)
        identities = client.request("GET", f"/callgrid/v1/identities?limit={limit}")["value"]
        devices = {d["rawId"]: d for d in client.request("GET", "/callgrid/v1/endpoints")["value"]}
    except Exception as exc:
        fail(exc)
    rows = [{**i, "device": devices.get(i["rawId"])} for i in identities]
    if as_json:
        print_json(rows)
        return
    table = Table(
        "raw id", "created (UTC)", "its device", title=f"{len(rows)} identit{'y' if len(rows) == 1 else 'ies'}"
    )
    for row in rows:
        device = describe(row["device"]) if row["device"] else "rings until the ring timeout"
        table.add_row(row["rawId"], row["createdAt"].replace("T", " ")[:19], device)
    console.print(table)
