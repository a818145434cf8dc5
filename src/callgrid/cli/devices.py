"""`callgrid device set|show|list`: script what the simulated device of an identity or phone number does when
it rings (`PUT /callgrid/v1/endpoints/{rawId}`): ring until the ring timeout, answer (at once or slowly),
decline, be busy, or be unreachable."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, err, fail, print_json
from callgrid.cli.options import format_duration, parse_duration

device_app = typer.Typer(
    help="Simulated devices: what an identity's or a number's phone does when it rings.", no_args_is_help=True
)

BEHAVIOURS = ("ring", "answer", "decline", "busy", "unreachable")
RawId = Annotated[
    str, typer.Argument(help="An identity's raw id (8:acs:...) or a phone number (+1425... or 4:+1425...).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")


def _path(raw_id: str) -> str:
    return "/callgrid/v1/endpoints/" + quote(raw_id.strip(), safe="")


def _milliseconds(value: str | None, option: str) -> int:
    if value is None:
        return 0
    try:
        return round(parse_duration(value) * 1000)
    except typer.BadParameter as exc:
        raise typer.BadParameter(exc.message, param_hint=option) from None


def describe(doc: dict[str, Any]) -> str:
    """One line a person reads: `answers after 5 s`, `is busy`, ..."""
    behaviour = str(doc["onIncomingCall"])
    text = {
        "ring": "rings until the ring timeout",
        "answer": "answers",
        "decline": "declines",
        "busy": "is busy",
        "unreachable": "is unreachable",
    }.get(behaviour, behaviour)
    if behaviour == "answer":
        delay = doc.get("answerDelayMs", 0) / 1000
        text += f" after {format_duration(delay)}" if delay else " at once"
    if doc.get("connectDelayMs"):
        text += f"; its calls out take {format_duration(doc['connectDelayMs'] / 1000)} to connect"
    return text


@device_app.command("set")
def device_set(
    raw_id: RawId,
    answer: Annotated[bool, typer.Option("--answer", help="It answers (after --delay, if given).")] = False,
    decline: Annotated[bool, typer.Option("--decline", help="It declines the call.")] = False,
    busy: Annotated[bool, typer.Option("--busy", help="It is busy.")] = False,
    unreachable: Annotated[bool, typer.Option("--unreachable", help="It cannot be reached.")] = False,
    ring: Annotated[bool, typer.Option("--ring", help="It rings until the ring timeout (the default).")] = False,
    delay: Annotated[
        str | None, typer.Option("--delay", help="With --answer: a slow device answers after this long (e.g. 5s).")
    ] = None,
    connect_delay: Annotated[
        str | None,
        typer.Option("--connect-delay", help="Calls an app places to it take this long to connect (e.g. 2s)."),
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Script a simulated device: --answer [--delay 5s], --decline, --busy, --unreachable or --ring."""
    chosen = [name for name, on in zip(BEHAVIOURS, (ring, answer, decline, busy, unreachable), strict=True) if on]
    if len(chosen) != 1:
        err.print("[red]error[/red] choose one of --answer, --decline, --busy, --unreachable, --ring.")
        raise typer.Exit(2)
    if delay is not None and chosen[0] != "answer":
        err.print("[red]error[/red] --delay is how long a device takes to answer: use it with --answer.")
        raise typer.Exit(2)
    body = {
        "onIncomingCall": chosen[0],
        "answerDelayMs": _milliseconds(delay, "--delay"),
        "connectDelayMs": _milliseconds(connect_delay, "--connect-delay"),
    }
    try:
        doc = client_for(data_dir, port).request("PUT", _path(raw_id), body)
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{doc['rawId']}[/bold] {describe(doc)}", highlight=False, soft_wrap=True)


@device_app.command("show")
def device_show(raw_id: RawId, as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """What a simulated device does when it rings."""
    try:
        doc = client_for(data_dir, port).request("GET", _path(raw_id))
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{doc['rawId']}[/bold] {describe(doc)}", highlight=False, soft_wrap=True)


@device_app.command("list")
def device_list(as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """The scripted devices; every other identity and number rings until the ring timeout."""
    try:
        docs = client_for(data_dir, port).request("GET", "/callgrid/v1/endpoints")["value"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(docs)
        return
    table = Table(
        "raw id", "on incoming call", "answer delay", "connect delay", title=f"{len(docs)} scripted device(s)"
    )
    for doc in docs:
        table.add_row(
            doc["rawId"],
            doc["onIncomingCall"],
            format_duration(doc["answerDelayMs"] / 1000) if doc["onIncomingCall"] == "answer" else "",
            format_duration(doc["connectDelayMs"] / 1000) if doc["connectDelayMs"] else "",
        )
    console.print(table)
