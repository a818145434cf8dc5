"""`callgrid resources create|list|show|delete|regenerate-key`: Communication resources on one server.

Each resource has its own keys, identities, numbers and system topic; they all share the endpoint (the key a
request is signed with says which resource it is for). Managed through the running server with the default
resource's key, so the server sees every change at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from callgrid.cli.common import DataDir, PortOption, client_for, console, fail

resources_app = typer.Typer(
    help="Communication resources on this server (each with its own keys, identities, numbers and events).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the resource as JSON.")]


def _show(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    for label, key in (
        ("name", "name"),
        ("resource id", "id"),
        ("immutable id", "immutableResourceId"),
        ("endpoint", "endpoint"),
        ("connection string", "primaryConnectionString"),
        ("secondary connection string", "secondaryConnectionString"),
    ):
        if key in doc:
            console.print(f"[bold]{label:<28}[/bold]{doc[key]}", soft_wrap=True, highlight=False)


@resources_app.command("create")
def resources_create(
    name: str,
    subscription_id: Annotated[
        str | None, typer.Option("--subscription-id", help="Its subscription (default: the server's).")
    ] = None,
    resource_group: Annotated[
        str | None, typer.Option("--resource-group", help="Its resource group (default: the server's).")
    ] = None,
    as_json: JsonOption = False,
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """Create a resource with its own keys; prints its connection string."""
    body: dict[str, Any] = {"name": name}
    if subscription_id is not None:
        body["subscriptionId"] = subscription_id
    if resource_group is not None:
        body["resourceGroup"] = resource_group
    try:
        doc = client_for(data_dir, port).request("POST", "/callgrid/v1/resources", body)
    except Exception as exc:
        fail(exc)
    _show(doc, as_json)
    if not as_json:
        console.print(f"\nIts variables: [bold]callgrid env --resource {name}[/bold]")


@resources_app.command("list")
def resources_list(as_json: JsonOption = False, data_dir: DataDir = Path(".callgrid"), port: PortOption = None) -> None:
    """List the server's resources (the default one first)."""
    try:
        docs = client_for(data_dir, port).request("GET", "/callgrid/v1/resources")["value"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print(json.dumps(docs, indent=2))
        return
    table = Table("name", "immutable id", "resource group", "default")
    for d in docs:
        table.add_row(d["name"], d["immutableResourceId"], d["resourceGroup"], "yes" if d["isDefault"] else "")
    console.print(table)


@resources_app.command("show")
def resources_show(
    name: str, as_json: JsonOption = False, data_dir: DataDir = Path(".callgrid"), port: PortOption = None
) -> None:
    """Show a resource, its keys and connection strings."""
    try:
        doc = client_for(data_dir, port).request("GET", f"/callgrid/v1/resources/{quote(name, safe='')}")
    except Exception as exc:
        fail(exc)
    _show(doc, as_json)


@resources_app.command("delete")
def resources_delete(name: str, data_dir: DataDir = Path(".callgrid"), port: PortOption = None) -> None:
    """Delete a resource and all that is its: identities, numbers, system topic and subscriptions."""
    try:
        client_for(data_dir, port).request("DELETE", f"/callgrid/v1/resources/{quote(name, safe='')}")
    except Exception as exc:
        fail(exc)
    console.print(f"deleted [bold]{name}[/bold]")


@resources_app.command("regenerate-key")
def resources_regenerate_key(
    name: str,
    key_type: Annotated[str, typer.Option("--key", help="primary or secondary.")] = "primary",
    as_json: JsonOption = False,
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """Replace a resource's primary or secondary key; the old one stops working at once."""
    try:
        doc = client_for(data_dir, port).request(
            "POST", f"/callgrid/v1/resources/{quote(name, safe='')}:regenerateKey", {"keyType": key_type}
        )
    except Exception as exc:
        fail(exc)
    _show(doc, as_json)
