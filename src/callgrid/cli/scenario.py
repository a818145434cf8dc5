"""`callgrid scenario run|list`: run call stories written in YAML against a fresh callgrid of their own.

`run` checks every file first (all problems, with file:line, exit status 2), then starts one server with
a virtual clock in a temporary directory, runs each scenario on it after a reset, and shows each step as
it finishes; a failed step prints what was expected against what was seen. Exit status 1 if any failed.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from callgrid.cli.common import console, err
from callgrid.cli.options import AsJson

if TYPE_CHECKING:
    # Loaded by the commands that use them: every `callgrid` command (`serve` too) imports this module.
    from callgrid.testing.scenario import Scenario
    from callgrid.testing.scenario_runner import ScenarioResult, StepResult
    from callgrid.testing.server import CallgridServer

scenario_app = typer.Typer(
    help="Run call stories (scenario files) against a callgrid of their own.", no_args_is_help=True
)

_MARKS = {"passed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]·[/]"}


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def list_scenarios(as_json: AsJson = False) -> None:
    """The scenarios that ship with callgrid (one per cell of the incoming-call scenario table)."""
    from callgrid.testing.scenario import SUFFIX, loads
    from callgrid.testing.scenario_runner import shipped_scenarios

    shipped = [
        (item.name.removesuffix(SUFFIX), loads(item.read_text(encoding="utf-8"), item.name))
        for item in shipped_scenarios()
    ]
    if as_json:
        print(json.dumps([{"name": name, "title": scenario.name} for name, scenario in shipped], indent=2))
        return
    for name, scenario in shipped:
        console.print(f"[bold]{name}[/]  {escape(scenario.name)}")


@scenario_app.command("run")
def run(
    files: Annotated[
        list[str], typer.Argument(help="Scenario files, or names of shipped ones (see `callgrid scenario list`).")
    ],
    ring_timeout: Annotated[
        float | None, typer.Option("--ring-timeout", help="The server's ring timeout in seconds (default 30).")
    ] = None,
) -> None:
    """Run scenario files in order, each on a freshly reset server; exit status 1 if any step fails."""
    from callgrid.testing.server import CallgridServer

    scenarios = _load_all(files)
    with tempfile.TemporaryDirectory(prefix="callgrid-scenario-") as directory:
        server = CallgridServer(Path(directory), ring_timeout=ring_timeout)
        with console.status("starting callgrid (virtual clock)…"):
            server.start()
        try:
            results = [_run_one(scenario, server) for scenario in scenarios]
        finally:
            server.stop()
    failed = [r for r in results if not r.passed]
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    console.print(f"\n[bold {'red' if failed else 'green'}]{summary}[/]")
    if failed:
        raise typer.Exit(1)


def _load_all(names: list[str]) -> list[Scenario]:
    from callgrid.testing.scenario import SUFFIX, ScenarioError, load, loads
    from callgrid.testing.scenario_runner import shipped_scenarios

    shipped = {item.name.removesuffix(SUFFIX): item for item in shipped_scenarios()}
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for name in names:
        try:
            if not Path(name).exists() and name.removesuffix(SUFFIX) in shipped:
                item = shipped[name.removesuffix(SUFFIX)]
                scenarios.append(loads(item.read_text(encoding="utf-8"), item.name))
            else:
                scenarios.append(load(name))
        except ScenarioError as exc:
            problems += exc.problems
    if problems:
        for problem in problems:
            err.print(escape(problem), highlight=False)
        err.print(f"[red]{len(problems)} problem{'s' if len(problems) > 1 else ''}: nothing was run.[/]")
        raise typer.Exit(2)
    return scenarios


def _run_one(scenario: Scenario, server: CallgridServer) -> ScenarioResult:
    from callgrid.testing.scenario_runner import run_scenario

    console.print(f"\n[bold]{escape(scenario.name)}[/]  [dim]{escape(str(scenario.path))}[/]")
    with console.status("") as status:

        def progress(result: StepResult) -> None:
            if result.status == "running":
                status.update(f"step {result.index + 1}: {escape(result.step.describe())}")
            else:
                _print_step(result)
            if result.status == "failed":
                _print_failure(scenario, result)

        result = asyncio.run(run_scenario(scenario, server, progress=progress, reset=True))
    if result.error:
        console.print(f"  [red]could not run: {escape(result.error)}[/]")
    if result.failure is not None:
        for skipped in result.steps:
            if skipped.status == "skipped":
                _print_step(skipped)
    return result


def _print_failure(scenario: Scenario, failed: StepResult) -> None:
    console.print(f"       [red]{escape(failed.message)}[/]  [dim]{escape(str(scenario.path))}:{failed.step.line}[/]")
    for line in failed.diff:
        style = "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
        console.print(f"       [{style}]{escape(line)}[/]", highlight=False)


def _print_step(result: StepResult) -> None:
    timing = f" [dim]{result.seconds:.2f}s[/]" if result.status != "skipped" else ""
    text = escape(result.step.describe())
    console.print(f"  {_MARKS[result.status]} {result.index + 1:>2} {text}{timing}", highlight=False)
