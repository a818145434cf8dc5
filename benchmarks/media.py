"""Media streaming at scale: N concurrent calls, each streaming bidirectional 16 kHz audio to one local app.

Processes on this machine: `callgrid serve` (system clock, SQLite); the app (this script's process: an
aiohttp WebSocket endpoint that echoes every frame it receives back into its call, and a webhook for
callbacks). The app places N calls with the official async SDK's `create_call` to external numbers whose
simulated phones answer at once, each with media streaming (mixed, bidirectional, started with the call);
every callee speaks a continuous tone, so every frame carries audio both ways.

Measured over a steady window after all streams are up:
- frame pacing at the app: per stream, the lateness of each frame against its stream's 20 ms grid
  (arrival - (first arrival + 20 ms x index)), p50 / p99 / max over all frames;
- frames lost: per stream, frames whose ACS timestamp steps by more than 20 ms from the previous one (and
  callgrid's own drop counters in /metrics);
- CPU per streamed call-second of callgrid's process, beside the same for a bare WebSocket echo in the
  same run: a client process that sends the same frames (same size, base64 JSON) to the same app at the
  same pace on N sockets, and receives the echoes.
`--planes thread,loop` measures the media plane in its own thread and on the server's loop one after the
other in the same run (each with its own callgrid server and bare baseline). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from route_latency import _cpu_seconds, _free_port, _pct, _run, _run_loop, _wait

FRAME = 0.02
TONE = base64.b64encode((2000 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype("<i2").tobytes()).decode()


class App:
    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.stamps: dict[str, list[str]] = {}
        self.connected: set[str] = set()
        self.measuring = False

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        key = request.query.get("call", "") or str(id(ws))
        arrivals = self.arrivals.setdefault(key, [])
        stamps = self.stamps.setdefault(key, [])
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("kind") == "AudioData":
                if self.measuring:
                    arrivals.append(time.monotonic())
                    stamps.append(frame["audioData"]["timestamp"])
                echo = json.dumps({"kind": "AudioData", "audioData": {"data": frame["audioData"]["data"]}})
                try:
                    await ws.send_str(echo)
                except ConnectionResetError:
                    break  # the call ended under the echo
        return ws

    async def callbacks(self, request: web.Request) -> web.Response:
        for event in await request.json():
            if event["type"].endswith("MediaStreamingStarted"):
                self.connected.add(event["data"]["callConnectionId"])
        return web.Response()


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process ("main" is the event loop's thread), from /proc."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else task.name
            out[name] = _cpu_seconds_of(task / "stat")
    return out


def _cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pacing(arrivals: dict[str, list[float]]) -> list[float]:
    late: list[float] = []
    for times in arrivals.values():
        if len(times) < 2:
            continue
        first = times[0]
        # Against the stream's own grid, anchored at its earliest-possible frame (so lateness >= 0).
        offsets = [t - first - i * FRAME for i, t in enumerate(times)]
        base = min(offsets)
        late.extend((o - base) * 1000 for o in offsets)
    return late


def _lost(stamps: dict[str, list[str]]) -> int:
    lost = 0
    for values in stamps.values():
        times = [datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() for v in values]
        for a, b in itertools.pairwise(times):
            lost += max(0, round((b - a) / FRAME) - 1)
    return lost


async def _bare_client(url: str, sockets: int, seconds: float) -> None:
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with session.ws_connect(f"{url}?call=bare{i}") as ws:

                async def drain() -> None:
                    async for _ in ws:
                        pass

                reader = asyncio.create_task(drain())
                start = time.monotonic()
                n = 0
                while time.monotonic() - start < seconds:
                    n += 1
                    stamp = datetime.now().isoformat()
                    await ws.send_str(
                        json.dumps(
                            {"kind": "AudioData", "audioData": {"timestamp": stamp, "data": TONE, "silent": False}}
                        )
                    )
                    await asyncio.sleep(max(0.0, start + n * FRAME - time.monotonic()))
                reader.cancel()

        await asyncio.gather(*(one(i) for i in range(sockets)))


def _bare_main(url: str, sockets: int, seconds: float) -> None:
    _run_loop(_bare_client(url, sockets, seconds))


async def _run_bench(env: dict[str, str], pid: int, calls: int, seconds: float) -> dict[str, Any]:
    from azure.communication.callautomation import (
        MediaStreamingAudioChannelType,
        MediaStreamingContentType,
        MediaStreamingOptions,
        PhoneNumberIdentifier,
        StreamingTransportType,
    )
    from azure.communication.callautomation.aio import CallAutomationClient

    from callgrid.client import CallgridClient

    app = App()
    web_app = web.Application()
    web_app.router.add_get("/ws", app.ws)
    web_app.router.add_post("/callbacks", app.callbacks)
    runner = web.AppRunner(web_app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = CallgridClient(env["CALLGRID_ENDPOINT"], env["CALLGRID_ACCESS_KEY"], Path(env["REQUESTS_CA_BUNDLE"]))
    caller_id = "+14255550100"
    client.own_number(caller_id)
    # aiohttp read SSL_CERT_FILE when this script imported it, before callgrid's CA existed: say it here.
    async with CallAutomationClient.from_connection_string(
        env["CALLGRID_CONNECTION_STRING"], connection_verify=env["REQUESTS_CA_BUNDLE"]
    ) as automation:
        for i in range(calls):
            callee = f"+1312555{i:04d}"
            client.request(
                "PUT", f"/callgrid/v1/endpoints/4:{callee}".replace("+", "%2B"), {"onIncomingCall": "answer"}
            )
            options = MediaStreamingOptions(
                transport_url=f"ws://127.0.0.1:{port}/ws?call={i}",
                transport_type=StreamingTransportType.WEBSOCKET,
                content_type=MediaStreamingContentType.AUDIO,
                audio_channel_type=MediaStreamingAudioChannelType.MIXED,
                start_media_streaming=True,
                enable_bidirectional=True,
            )
            await automation.create_call(
                PhoneNumberIdentifier(callee),
                f"http://127.0.0.1:{port}/callbacks",
                source_caller_id_number=PhoneNumberIdentifier(caller_id),
                media_streaming=options,
            )
        deadline = time.monotonic() + 60
        while len(app.connected) < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # Every callee speaks a tone for the whole window: audio both ways in every frame.
        tone = (2000 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * (seconds + 5))) / 16000)).astype(np.int16)
        from callgrid.media.codecs import encode_wav

        audio = base64.b64encode(encode_wav([tone])).decode()
        for call in client.request("GET", "/callgrid/v1/calls")["value"]:
            if call["state"] == "connected":
                callee_raw = next(p["rawId"] for p in call["participants"] if p["rawId"].startswith("4:+1312"))
                path = f"/callgrid/v1/calls/{call['serverCallId']}/participants/{callee_raw.replace('+', '%2B')}:play"
                client.request("POST", path, {"audio": audio})
        await asyncio.sleep(1.0)
        app.measuring = True
        cpu0, own0, t0 = _cpu_seconds(pid), _cpu_seconds(os.getpid()), time.monotonic()
        threads0 = _thread_cpu(pid)
        await asyncio.sleep(seconds)
        cpu1, own1, t1 = _cpu_seconds(pid), _cpu_seconds(os.getpid()), time.monotonic()
        threads1 = _thread_cpu(pid)
        app.measuring = False
    streamed = {k: v for k, v in app.arrivals.items() if not k.startswith("bare")}
    late = _pacing(streamed)
    lost = _lost({k: v for k, v in app.stamps.items() if not k.startswith("bare")})
    frames = sum(len(v) for v in streamed.values())
    callgrid_cpu = (cpu1 - cpu0) / (len(streamed) * (t1 - t0)) if streamed else float("nan")

    # The bare baseline: the same frames over the same number of sockets, from a process of its own.
    import multiprocessing

    bare = multiprocessing.Process(target=_bare_main, args=(f"ws://127.0.0.1:{port}/ws", calls, seconds + 2))
    app.arrivals.clear()
    app.stamps.clear()
    bare.start()
    await asyncio.sleep(1.0)
    app.measuring = True
    b0, bt0 = _cpu_seconds(bare.pid or 0), time.monotonic()
    await asyncio.sleep(seconds)
    b1, bt1 = _cpu_seconds(bare.pid or 0), time.monotonic()
    app.measuring = False
    bare_late = _pacing({k: v for k, v in app.arrivals.items() if k.startswith("bare")})
    await asyncio.get_running_loop().run_in_executor(None, bare.join, 30)
    await runner.cleanup()
    bare_cpu = (b1 - b0) / (calls * (bt1 - bt0))
    metrics = client._send("GET", "/metrics", b"", {}, json_body=False, as_bytes=True).decode()
    drops = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("callgrid_media_") and not line.startswith("#")
    }
    return {
        "calls": calls,
        "streams_measured": len(streamed),
        "seconds": round(t1 - t0, 2),
        "frames": frames,
        "frames_expected": int(len(streamed) * (t1 - t0) / FRAME),
        "frames_lost": lost,
        "pacing_ms": {
            "p50": round(_pct(late, 50), 2),
            "p99": round(_pct(late, 99), 2),
            "max": round(max(late, default=0), 2),
        },
        "bare_pacing_ms": {"p50": round(_pct(bare_late, 50), 2), "p99": round(_pct(bare_late, 99), 2)},
        "cpu_ms_per_stream_second": {
            "callgrid": round(callgrid_cpu * 1000, 3),
            "bare_websocket_client": round(bare_cpu * 1000, 3),
            "ratio": round(callgrid_cpu / bare_cpu, 2) if bare_cpu else None,
        },
        # The app (echoing every frame) and the driver share this process: its share of the 2 cores.
        "app_process_cores": round((own1 - own0) / (t1 - t0), 2),
        "callgrid_process_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
        # The busiest threads of callgrid's process ("main": the server's loop; the media plane's thread
        # is the other busy one when it runs in its own).
        "callgrid_thread_cores": dict(
            sorted(
                ((k, round((v - threads0.get(k, 0.0)) / (t1 - t0), 3)) for k, v in threads1.items()),
                key=lambda kv: -kv[1],
            )[:3]
        ),
        "callgrid_media_counters": drops,
    }


def _measure(plane: str, calls: int, seconds: float) -> dict[str, Any]:
    """One callgrid server with the media plane in its own thread ("thread") or on the server's loop."""
    work = Path(tempfile.mkdtemp(prefix="media-bench-"))
    port = _free_port()
    proc = None
    try:
        log = (work / "callgrid.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "callgrid", "serve", "--data-dir", str(work / "cg"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CALLGRID_MEDIA_THREAD": "true" if plane == "thread" else "false"},
        )
        env = {**os.environ}
        for line in _run("env", "--data-dir", str(work / "cg"), "--port", str(port)).splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0]
        _wait(env["CALLGRID_ENDPOINT"] + "/calling/keys", env["REQUESTS_CA_BUNDLE"])
        os.environ.update({k: env[k] for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")})
        return {"media_plane": plane, **_run_loop(_run_bench(env, proc.pid, calls, seconds))}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--planes",
        default="thread",
        help="comma-separated, measured in this order in one run: thread (the media plane's own thread, "
        "the default) and/or loop (the plane on the server's event loop)",
    )
    args = parser.parse_args()
    results = [_measure(plane, args.calls, args.seconds) for plane in args.planes.split(",")]
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))


if __name__ == "__main__":
    main()
