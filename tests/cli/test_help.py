"""Every command answers `-h` as it answers `--help`, and every listing or show command has `--json`."""

from __future__ import annotations

from typing import Any

import typer.main
from typer.testing import CliRunner

from callgrid.cli import app

# Read-outs that print what the server (or the router's store) holds.
READ_OUTS = {"list", "show", "log", "blocked", "deliveries", "health"}


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and group, by its path (typer carries its own click: walk by duck typing)."""
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


def test_every_command_takes_dash_h() -> None:
    commands = _commands()
    assert len(commands) > 40
    runner = CliRunner()
    for path, _ in commands:
        result = runner.invoke(app, [*path, "-h"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and "--help" in result.output, path


def test_every_read_out_has_json() -> None:
    read_outs = [(path, c) for path, c in _commands() if path and path[-1] in READ_OUTS]
    assert len(read_outs) >= 12
    for path, command in read_outs:
        assert any("--json" in p.opts for p in command.params), f"`callgrid {' '.join(path)}` has no --json"
