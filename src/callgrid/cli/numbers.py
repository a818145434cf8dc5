"""`callgrid numbers add|list|remove`: phone numbers the resource owns."""

from __future__ import annotations

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, fail, print_json

numbers_app = typer.Typer(help="Phone numbers the resource owns.", no_args_is_help=True)


@numbers_app.command("add")
def numbers_add(number: str, data_dir: DataDir = None, port: PortOption = None) -> None:
    """Own a phone number (E.164)."""
    try:
        doc = client_for(data_dir, port).own_number(number)
    except Exception as exc:
        fail(exc)
    console.print(f"owned [bold]{doc['phoneNumber']}[/bold] ({doc['countryCode']}, {doc['phoneNumberType']})")


@numbers_app.command("list")
def numbers_list(as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """List owned phone numbers."""
    try:
        page = client_for(data_dir, port).list_numbers()["phoneNumbers"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(page)
        return
    table = Table("phone number", "country", "type", "calling", "since")
    for n in page:
        table.add_row(
            n["phoneNumber"],
            n["countryCode"],
            n["phoneNumberType"],
            n["capabilities"]["calling"],
            n["purchaseDate"],
        )
    console.print(table)


@numbers_app.command("remove")
def numbers_remove(number: str, data_dir: DataDir = None, port: PortOption = None) -> None:
    """Release an owned phone number."""
    try:
        client_for(data_dir, port).release_number(number)
    except Exception as exc:
        fail(exc)
    console.print(f"released [bold]{number}[/bold]")
