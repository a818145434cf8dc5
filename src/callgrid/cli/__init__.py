"""The `callgrid` command. Each area keeps its commands in a module of this package."""

from __future__ import annotations

import typer

from callgrid.cli import calls, calls_sim, demo, events, serve
from callgrid.cli.identities import identities_app
from callgrid.cli.numbers import numbers_app
from callgrid.cli.router import router_app
from callgrid.cli.subscriptions import subscriptions_app

app = typer.Typer(
    help="callgrid: Azure Communication Services incoming calls and Event Grid, on one machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve.register(app)
calls.register(app)
calls_sim.register(app)
events.register(app)
app.add_typer(numbers_app, name="numbers")
app.add_typer(identities_app, name="identities")
app.add_typer(router_app, name="router")
app.add_typer(subscriptions_app, name="subscriptions")
demo.register(app)


def main() -> None:
    app()
