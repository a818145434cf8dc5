"""What people on a simulated call do, from the shell: hang up, press keys; and fetching recordings.

`callgrid hang-up`, `callgrid send-dtmf` and `callgrid recordings download` call callgrid's simulator
and download routes (the SDK's own `download_recording` accepts Azure storage hosts only).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from callgrid.cli.common import DataDir, PortOption, client_for, console, err, fail

recordings_app = typer.Typer(help="Recordings of calls: download their audio.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("hang-up")(hang_up)
    app.command("send-dtmf")(send_dtmf)
    app.add_typer(recordings_app, name="recordings")


def _segment(value: str) -> str:
    return quote(value, safe="")


def hang_up(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    participant: Annotated[
        str | None,
        typer.Option("--participant", help="Raw id of who hangs up (default: the caller, abandoning a ringing call)."),
    ] = None,
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """A simulated party hangs up: the caller by default, or --participant."""
    client = client_for(data_dir, port)
    body = {} if participant is None else {"participant": participant}
    try:
        result = client.request("POST", f"/callgrid/v1/calls/{_segment(server_call_id)}:hangUp", body)
    except Exception as exc:
        fail(exc)
    who = participant or "the caller"
    console.print(f"[bold]{who}[/bold] hung up; call {result['serverCallId']} is [bold]{result['state']}[/bold]")


def send_dtmf(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    raw_id: Annotated[str, typer.Argument(help="Raw id of the participant pressing keys (e.g. 4:+12065550100).")],
    tones: Annotated[str, typer.Argument(help="Keys to press: 0-9, *, #, A-D (e.g. '42#').")],
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """A simulated participant presses keys; Call Automation recognizers in the call hear them."""
    client = client_for(data_dir, port)
    path = f"/callgrid/v1/calls/{_segment(server_call_id)}/participants/{_segment(raw_id)}:sendDtmf"
    try:
        result = client.request("POST", path, {"tones": tones})
    except Exception as exc:
        fail(exc)
    console.print(f"[bold]{raw_id}[/bold] pressed {' '.join(result['tones'])}")


@recordings_app.command("download")
def download(
    recording_id: Annotated[str, typer.Argument(help="The recordingId (start_recording's answer).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the WAV file.")],
    metadata: Annotated[
        Path | None, typer.Option("--metadata", help="Also write the recording's metadata JSON here.")
    ] = None,
    data_dir: DataDir = Path(".callgrid"),
    port: PortOption = None,
) -> None:
    """Download a stopped recording's audio (WAV) and, with --metadata, its metadata document."""
    client = client_for(data_dir, port)
    base = f"/callgrid/v1/recordings/{_segment(recording_id)}"
    try:
        audio = client.download(base + "/content")
        meta = client.download(base + "/metadata") if metadata is not None else None
    except Exception as exc:
        fail(exc)
    try:
        output.write_bytes(audio)
        if metadata is not None and meta is not None:
            metadata.write_bytes(meta)
    except OSError as exc:
        err.print(f"[red]error[/red] cannot write the file: {exc}")
        raise typer.Exit(1) from None
    with wave.open(io.BytesIO(audio)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    console.print(f"wrote [bold]{output}[/bold]: {len(audio)} bytes, {seconds:.3f} s of audio")
    if metadata is not None:
        console.print(f"wrote [bold]{metadata}[/bold]")
