"""`callgrid clock show|advance|set`: read the server's clock, or move a virtual one (`serve --clock virtual`).

Moving the clock runs every timer, retry and delivery that falls due on the way, each at its own time
(`POST /callgrid/v1/clock:advance`), so `callgrid clock advance 1d` plays a whole day. `set` is an advance to a
given time: the clock never goes backwards. A system clock cannot be moved (the server answers 409).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, err, fail, print_json
from callgrid.cli.options import format_duration, parse_duration
from callgrid.client import CallgridClient

clock_app = typer.Typer(help="The server's clock: show it, or move a virtual one.", no_args_is_help=True)

# A long advance plays every piece of work due on the way; give it far longer than one request.
ADVANCE_TIMEOUT_SECONDS = 3600.0


def register(app: typer.Typer) -> None:
    app.add_typer(clock_app, name="clock")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"now": _iso(doc["now"]), "epochSeconds": doc["now"], "virtual": doc["virtual"]}


def _show(doc: dict[str, Any], as_json: bool, moved: float | None = None) -> None:
    if as_json:
        print_json(_view(doc) | ({} if moved is None else {"advancedSeconds": moved}))
        return
    kind = "virtual" if doc["virtual"] else "system"
    line = f"{_iso(doc['now'])} ({kind} clock)"
    if moved is not None:
        line = f"moved {format_duration(moved)}: now {line}"
    console.print(line, highlight=False)


def _advance(client: CallgridClient, seconds: float, patience: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"seconds": seconds}
    if patience is not None:
        body["patienceSeconds"] = patience
    client.timeout = ADVANCE_TIMEOUT_SECONDS
    with err.status(f"moving the clock {format_duration(seconds)}, running what falls due on the way…"):
        doc: dict[str, Any] = client.request("POST", "/callgrid/v1/clock:advance", body)
    return doc


Patience = Annotated[
    str | None,
    typer.Option(
        "--patience",
        help="Real time to wait for a webhook's answer before the clock runs on (default: the server's, 1s).",
    ),
]


@clock_app.command("show")
def clock_show(as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """The server's time, and whether its clock is virtual."""
    try:
        doc = client_for(data_dir, port).request("GET", "/callgrid/v1/clock")
    except Exception as exc:
        fail(exc)
    _show(doc, as_json)


@clock_app.command("advance")
def clock_advance(
    duration: Annotated[str, typer.Argument(help="How far: 30s, 250ms, 5m, 1h30m, 1d, or seconds.")],
    patience: Patience = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Move a virtual clock forward; every timer and retry due on the way runs at its own time."""
    seconds = parse_duration(duration)  # a bad one is a usage error (exit 2), before anything is asked
    wait = None if patience is None else parse_duration(patience)
    try:
        doc = _advance(client_for(data_dir, port), seconds, wait)
    except Exception as exc:
        fail(exc)
    _show(doc, as_json, seconds)


@clock_app.command("set")
def clock_set(
    when: Annotated[str, typer.Argument(help="An ISO 8601 time, e.g. 2030-01-01T09:00:00Z (UTC if no offset).")],
    patience: Patience = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Move a virtual clock forward to a given time (it never goes back)."""
    try:
        target = datetime.fromisoformat(when.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"'{when}' is not an ISO 8601 time, e.g. 2030-01-01T09:00:00Z.") from None
    if target.tzinfo is None:
        target = target.replace(tzinfo=UTC)
    wait = None if patience is None else parse_duration(patience)
    try:
        client = client_for(data_dir, port)
        now = client.request("GET", "/callgrid/v1/clock")
        seconds = target.timestamp() - now["now"]
        if seconds < 0:
            err.print(
                f"[red]error[/red] the clock is at {_iso(now['now'])}; it does not go back to "
                f"{_iso(target.timestamp())}.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        doc = _advance(client, seconds, wait)
    except Exception as exc:
        fail(exc)
    _show(doc, as_json, seconds)
