"""What people on a simulated call do, from the shell: hang up, press keys, speak, play audio, and what
they heard; and fetching recordings.

`callgrid hang-up`, `send-dtmf`, `say`, `play-audio`, `listen` and `recordings download` call callgrid's
simulator and download routes (the SDK's own `download_recording` accepts Azure storage hosts only).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from callgrid.cli.common import DataDir, PortOption, client_for, console, err, fail

recordings_app = typer.Typer(help="Recordings of calls: download their audio.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("hang-up")(hang_up)
    app.command("send-dtmf")(send_dtmf)
    app.command("say")(say)
    app.command("play-audio")(play_audio)
    app.command("listen")(listen)
    app.add_typer(recordings_app, name="recordings")


def _segment(value: str) -> str:
    return quote(value, safe="")


def hang_up(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    participant: Annotated[
        str | None,
        typer.Option("--participant", help="Raw id of who hangs up (default: the caller, abandoning a ringing call)."),
    ] = None,
    data_dir: DataDir = None,
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
    data_dir: DataDir = None,
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


def say(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    raw_id: Annotated[str, typer.Argument(help="Raw id of the participant speaking (e.g. 4:+12065550100).")],
    text: Annotated[str, typer.Argument(help="What they say (synthesised with espeak-ng).")],
    voice: Annotated[str | None, typer.Option(help="An Azure voice name or locale, e.g. en-GB.")] = None,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """A simulated participant speaks: the app's recognizers, streams, transcription and recordings hear it."""
    client = client_for(data_dir, port)
    path = f"/callgrid/v1/calls/{_segment(server_call_id)}/participants/{_segment(raw_id)}:say"
    body = {"text": text, **({"voice": voice} if voice else {})}
    try:
        result = client.request("POST", path, body)
    except Exception as exc:
        fail(exc)
    console.print(f"[bold]{raw_id}[/bold] says “{text}” ({result['durationMs'] / 1000:.1f} s)")


def play_audio(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    raw_id: Annotated[str, typer.Argument(help="Raw id of the participant whose microphone plays the file.")],
    file: Annotated[Path, typer.Argument(help="A WAV or MP3 file (any rate; it is converted).", exists=True)],
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """A simulated participant plays a file into the call, as if speaking it."""
    client = client_for(data_dir, port)
    path = f"/callgrid/v1/calls/{_segment(server_call_id)}/participants/{_segment(raw_id)}:play"
    try:
        result = client.request("POST", path, {"audio": base64.b64encode(file.read_bytes()).decode()})
    except Exception as exc:
        fail(exc)
    console.print(f"[bold]{raw_id}[/bold] plays {file} ({result['durationMs'] / 1000:.1f} s)")


def listen(
    server_call_id: Annotated[str, typer.Argument(help="The call's serverCallId.")],
    raw_id: Annotated[str, typer.Argument(help="Raw id of the participant whose ears to borrow.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the WAV file.")],
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Write what a simulated participant has heard so far (16 kHz mono WAV)."""
    client = client_for(data_dir, port)
    path = f"/callgrid/v1/calls/{_segment(server_call_id)}/participants/{_segment(raw_id)}/audio"
    try:
        audio = client.download(path)
    except Exception as exc:
        fail(exc)
    _write(output, audio)
    console.print(f"wrote [bold]{output}[/bold]: {_seconds(audio):.3f} s of what {raw_id} heard")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        err.print(f"[red]error[/red] cannot write the file: {exc}")
        raise typer.Exit(1) from None


def _seconds(audio: bytes) -> float:
    from callgrid.media import codecs  # numpy and FFmpeg: loaded only by the commands that need them

    try:
        return codecs.duration_seconds(codecs.decode(audio))
    except codecs.UnsupportedAudio:
        return 0.0


@recordings_app.command("download")
def download(
    recording_id: Annotated[str, typer.Argument(help="The recordingId (start_recording's answer).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the file (wav, mp3 or mp4).")],
    metadata: Annotated[
        Path | None, typer.Option("--metadata", help="Also write the recording's metadata JSON here.")
    ] = None,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Download a stopped recording's file and, with --metadata, its metadata document."""
    client = client_for(data_dir, port)
    base = f"/callgrid/v1/recordings/{_segment(recording_id)}"
    try:
        audio = client.download(base + "/content")
        meta = client.download(base + "/metadata") if metadata is not None else None
    except Exception as exc:
        fail(exc)
    _write(output, audio)
    if metadata is not None and meta is not None:
        _write(metadata, meta)
    console.print(f"wrote [bold]{output}[/bold]: {len(audio)} bytes, {_seconds(audio):.3f} s of audio")
    if metadata is not None:
        console.print(f"wrote [bold]{metadata}[/bold]")
