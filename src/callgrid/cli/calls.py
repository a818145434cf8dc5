"""`callgrid call`: drive the simulator and watch what happens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from callgrid.cli.common import DataDir, PortOption, client_for, console, fail


def register(app: typer.Typer) -> None:
    app.command()(call)


def call(
    source: Annotated[str, typer.Option("--from", help="Caller: a raw id or an E.164 number.")],
    target: Annotated[str, typer.Option("--to", help="Callee: an identity or an owned number.")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    watch: Annotated[float, typer.Option(help="Seconds to follow the call's timeline (0: don't).")] = 10.0,
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """Place a call: raises IncomingCall, then shows the call's timeline as it happens."""
    client = client_for(data_dir, port)
    try:
        placed = client.place_call(source, target, display_name)
    except Exception as exc:
        fail(exc)
    console.print(f"call [bold]{placed['serverCallId']}[/bold] placed: {source} → {target}")
    seen = 0
    deadline = time.monotonic() + watch
    started: float | None = None
    with console.status("ringing…") as status:
        while True:
            view = client.get_call(placed["serverCallId"])
            for entry in view["timeline"][seen:]:
                started = started if started is not None else entry["time"]
                console.print(_timeline_line(entry, started))
            seen = len(view["timeline"])
            status.update(f"{view['state']}…")
            if view["state"] != "ringing" or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    console.print(f"state: [bold]{view['state']}[/bold]")


def _timeline_line(entry: dict[str, Any], started: float) -> str:
    offset = entry["time"] - started
    detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("time", "event"))
    return f"  [dim]+{offset * 1000:7.1f} ms[/dim]  [bold]{entry['event']}[/bold]  {detail}"
