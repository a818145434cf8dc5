"""`callgrid call`: drive the simulator and watch what happens."""

from __future__ import annotations

import base64
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from callgrid.cli.common import DataDir, PortOption, client_for, console, fail


def register(app: typer.Typer) -> None:
    app.command()(call)


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
            entries = _entries(view, client.deliveries(200)["value"])
            for key, entry in entries:
                if key in shown:
                    continue
                shown.add(key)
                started = started if started is not None else entry["time"]
                console.print(_timeline_line(entry, started))
            status.update(f"{view['state']}…")
            voice.step(view["state"])
            settled = not any(d["status"] == "pending" for d in _deliveries_of(view, client.deliveries(200)["value"]))
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
