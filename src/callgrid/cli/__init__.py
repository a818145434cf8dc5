"""The `callgrid` command. Each area keeps its commands in a module of this package."""

from __future__ import annotations

from typing import Annotated

import typer

from callgrid import __version__
from callgrid.cli import admin, calls, calls_sim, clock, demo, devices, events, scenario, serve, tokens
from callgrid.cli.identities import identities_app
from callgrid.cli.numbers import numbers_app
from callgrid.cli.resources import resources_app
from callgrid.cli.router import router_app
from callgrid.cli.subscriptions import subscriptions_app

app = typer.Typer(
    help="callgrid: Azure Communication Services incoming calls and Event Grid, on one machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Sub-commands inherit this from the root context: `-h` works everywhere `--help` does.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"callgrid {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """callgrid: Azure Communication Services incoming calls and Event Grid, on one machine."""


serve.register(app)
tokens.register(app)
admin.register(app)
calls.register(app)
calls_sim.register(app)
devices.register(app)
clock.register(app)
events.register(app)
app.add_typer(numbers_app, name="numbers")
app.add_typer(resources_app, name="resources")
app.add_typer(identities_app, name="identities")
app.add_typer(router_app, name="router")
app.add_typer(subscriptions_app, name="subscriptions")
demo.register(app)
scenario.register(app)


def main() -> None:
    app()
