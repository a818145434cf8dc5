"""`callgrid call`: drive the simulator and watch what happens; `callgrid calls list|show`: what the server
knows of calls (participants, offers, state, timeline)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, fail, print_json

calls_app = typer.Typer(help="Calls as the server knows them: list them, show one.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(call)
    app.add_typer(calls_app, name="calls")


def call(
    source: Annotated[str, typer.Option("--from", help="Caller: a raw id or an E.164 number.")],
    target: Annotated[str, typer.Option("--to", help="Callee: an identity or an owned number.")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    watch: Annotated[float, typer.Option(help="Seconds to follow the call's timeline (0: don't).")] = 10.0,
    say: Annotated[
        str | None, typer.Option("--say", help="Once connected, the caller says this (e.g. 'I want sales').")
    ] = None,
    play: Annotated[
        Path | None, typer.Option("--play", help="Once connected, the caller plays this WAV/MP3 as their voice.")
    ] = None,
    speak_after: Annotated[float, typer.Option(help="Seconds after connecting before --say / --play.")] = 1.0,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Place a call: raises IncomingCall, then shows the call's timeline as it happens; the caller can speak."""
    client = client_for(data_dir, port)
    try:
        placed = client.place_call(source, target, display_name)
    except Exception as exc:
        fail(exc)
    console.print(f"call [bold]{placed['serverCallId']}[/bold] placed: {source} → {target}")
    shown: set[str] = set()
    deadline = time.monotonic() + watch
    started: float | None = None
    voice = _Voice(client, placed["serverCallId"], source, say, play, speak_after)
    with console.status("ringing…") as status:
        while True:
            view = client.get_call(placed["serverCallId"])
            # One read of the deliveries for both what is shown and whether they are settled: with two, an
            # attempt recorded between them ended the watch without ever being shown.
            deliveries = client.deliveries(200)["value"]
            entries = _entries(view, deliveries)
            for key, entry in entries:
                if key in shown:
                    continue
                shown.add(key)
                started = started if started is not None else entry["time"]
                console.print(_timeline_line(entry, started))
            status.update(f"{view['state']}…")
            voice.step(view["state"])
            settled = not any(d["status"] == "pending" for d in _deliveries_of(view, deliveries))
            # With --say / --play, keep following what the app does about it until --watch runs out.
            quiet = voice.done and (not voice.speaks or view["state"] == "disconnected")
            if (view["state"] != "ringing" and settled and quiet) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    console.print(f"state: [bold]{view['state']}[/bold]")


class _Voice:
    """What the caller says once the call is connected (--say, --play)."""

    def __init__(
        self, client: Any, server_call_id: str, caller: str, text: str | None, file: Path | None, after: float
    ) -> None:
        self._client, self._call, self._text, self._file, self._after = client, server_call_id, text, file, after
        self._raw_id = caller if ":" in caller else "4:" + caller
        self._connected_at: float | None = None
        self.speaks = text is not None or file is not None
        self.done = not self.speaks

    def step(self, state: str) -> None:
        if self.done or state != "connected":
            if state == "disconnected":
                self.done = True
            return
        now = time.monotonic()
        self._connected_at = self._connected_at or now
        if now - self._connected_at < self._after:
            return
        self.done = True
        base = f"/callgrid/v1/calls/{quote(self._call, safe='')}/participants/{quote(self._raw_id, safe='')}"
        try:
            if self._text is not None:
                self._client.request("POST", base + ":say", {"text": self._text})
                console.print(f"  caller says “{self._text}”")
            if self._file is not None:
                audio = base64.b64encode(self._file.read_bytes()).decode()
                self._client.request("POST", base + ":play", {"audio": audio})
                console.print(f"  caller plays {self._file}")
        except Exception as exc:
            fail(exc)


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


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _callee(view: dict[str, Any]) -> str:
    """Whom the call was first offered to (later offers are redirects, transfers, added participants)."""
    return str(view["offers"][0]["target"]) if view["offers"] else ""


@calls_app.command("list")
def calls_list(
    limit: Annotated[int, typer.Option(help="At most this many, last changed first.", min=1, max=1000)] = 20,
    state: Annotated[str | None, typer.Option(help="Only calls in this state (ringing, connected, ...).")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Recent calls: state, who called whom, when."""
    try:
        views = client_for(data_dir, port).request("GET", f"/callgrid/v1/calls?limit={limit}")["value"]
    except Exception as exc:
        fail(exc)
    if state is not None:
        views = [v for v in views if v["state"] == state]
    if as_json:
        print_json(views)
        return
    table = Table("server call id", "state", "from", "to", "started (UTC)", "participants", "ended", title="calls")
    for v in views:
        ended = v["endReason"] or ("" if v["endedAt"] is None else _when(v["endedAt"]))
        table.add_row(
            v["serverCallId"],
            v["state"],
            v["source"] or "",
            _callee(v),
            _when(v["createdAt"]),
            str(len(v["participants"])),
            str(ended),
        )
    console.print(table)


@calls_app.command("show")
def calls_show(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId (see `callgrid calls list`).")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """One call: state, participants, offers (who rang, what became of it) and its timeline."""
    client = client_for(data_dir, port)
    try:
        view = client.get_call(server_call_id)
        deliveries = client.deliveries(200)["value"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(view)
        return
    console.print(f"call [bold]{view['serverCallId']}[/bold]: [bold]{view['state']}[/bold]", highlight=False)
    console.print(f"  from {view['source'] or '?'} to {_callee(view)}", highlight=False, soft_wrap=True)
    console.print(f"  correlation id {view['correlationId']}, started {_when(view['createdAt'])} UTC", highlight=False)
    if view["endedAt"] is not None:
        console.print(
            f"  ended {_when(view['endedAt'])} UTC ({view['endReason'] or 'no reason given'})", highlight=False
        )
    participants = Table("participant", "role", "joined (UTC)", "call connection", title="participants")
    for p in view["participants"]:
        participants.add_row(p["rawId"], p["role"], _when(p["joinedAt"]), p["callConnectionId"] or "")
    console.print(participants)
    offers = Table("offered to", "from", "scenario", "state", "outcome", title="offers (IncomingCall)")
    for o in view["offers"]:
        offers.add_row(o["target"], o["from"] or "", o["scenario"], o["state"], o["outcome"] or "")
    console.print(offers)
    console.print("[bold]timeline[/bold]")
    entries = _entries(view, deliveries)
    started = entries[0][1]["time"] if entries else 0.0
    for _, entry in entries:
        console.print(_timeline_line(entry, started), highlight=False, soft_wrap=True)
