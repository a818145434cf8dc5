"""Options every command group shares, kept free of heavy imports so `callgrid router ...` (a plain SDK user)
can take them without loading callgrid's platform."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from callgrid.datadir import DATA_DIR_ENV, DATA_DIR_FOLDER

# No typer envvar: `locate_data_dir` reads CALLGRID_DATA_DIR itself, so messages can say which rule chose the folder.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help=f"Where state lives (default: ${DATA_DIR_ENV}, else the nearest {DATA_DIR_FOLDER} folder here or "
        "above, else ~/.local/share/callgrid).",
        show_default=False,
    ),
]
PortOption = Annotated[int | None, typer.Option("--port", "-p", help="The server's port (default: as last served).")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where state lives: sqlite:///path (default: callgrid.db in the data dir) or "
        "postgresql://user@host:port/db[?schema=NAME] to share it between several nodes.",
        envvar="CALLGRID_STORE",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys, for scripts) instead of a table.")]


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in `text`: `30`, `1.5s`, `250ms`, `5m`, `1h30m`, `1d` (a bare number is seconds)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise typer.BadParameter(
            f"'{text}' is not a duration: use e.g. 30s, 250ms, 5m, 1h30m, 1d, or a number of seconds."
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """The other way, for people: 0.25 -> 250 ms, 90 -> 1 min 30 s, 86400 -> 1 d."""
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{round(secs + (seconds - whole), 3):g} s" if secs or seconds != whole else ""
    shown = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", secs_text]
    return " ".join(part for part in shown if part)
