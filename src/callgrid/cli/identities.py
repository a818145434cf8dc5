"""`callgrid identities create`: Communication identities."""

from __future__ import annotations

from typing import Annotated

import typer

from callgrid.cli.common import DataDir, PortOption, client_for, fail

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
