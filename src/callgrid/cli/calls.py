"""`callgrid call`: drive the simulator and watch what happens."""

from __future__ import annotations

import time
from datetime import datetime
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
    shown: set[str] = set()
    deadline = time.monotonic() + watch
    started: float | None = None
    with console.status("ringing…") as status:
        while True:
            view = client.get_call(placed["serverCallId"])
            entries = _entries(view, client.deliveries(200)["value"])
            for key, entry in entries:
                if key in shown:
                    continue
                shown.add(key)
                started = started if started is not None else entry["time"]
                console.print(_timeline_line(entry, started))
            status.update(f"{view['state']}…")
            settled = not any(d["status"] == "pending" for d in _deliveries_of(view, client.deliveries(200)["value"]))
            if (view["state"] != "ringing" and settled) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    console.print(f"state: [bold]{view['state']}[/bold]")


def _deliveries_of(view: dict[str, Any], deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events = {o["incomingCallEventId"] for o in view["offers"] if o.get("incomingCallEventId")}
    return [d for d in deliveries if d["kind"] == "eventgrid" and d["eventId"] in events]


def _entries(view: dict[str, Any], deliveries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The call's own timeline, with each IncomingCall delivery attempt (who got it, how it answered)."""
    entries = [(f"t{i}", entry) for i, entry in enumerate(view["timeline"])]
    for delivery in _deliveries_of(view, deliveries):
        subscription = (delivery["subscriptionId"] or "").rsplit("/", 1)[-1].upper()
        for attempt in delivery["history"]:
            when = datetime.fromisoformat(attempt["startedAt"].replace("Z", "+00:00")[:26] + "+00:00")
            answer = attempt["status"] if attempt["status"] is not None else attempt["outcome"]
            detail = {"to": subscription, "url": delivery["url"], "answer": answer}
            if attempt.get("durationMs") is not None:
                detail["took"] = f"{attempt['durationMs']:.1f} ms"
            entry = {"time": when.timestamp(), "event": "IncomingCall delivered", **detail}
            entries.append((f"{delivery['id']}/{attempt['attempt']}", entry))
    return sorted(entries, key=lambda e: e[1]["time"])


def _timeline_line(entry: dict[str, Any], started: float) -> str:
    offset = entry["time"] - started
    detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("time", "event"))
    return f"  [dim]+{offset * 1000:7.1f} ms[/dim]  [bold]{entry['event']}[/bold]  {detail}"
