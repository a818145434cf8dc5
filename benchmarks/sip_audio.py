"""SIP calls with audio both ways: N concurrent calls over the trunk, RTP each way, frames counted.

Processes on this machine: `callgrid serve --sip-port` (system clock, SQLite) and this script, which is the
carrier's SBC and its callers: a small asyncio user agent (one UDP signalling socket, one RTP socket per
call) that places N calls to an owned number, ACKs the 200 and speaks G.711 µ-law (a 1 kHz tone) in 20 ms
packets for as long as the call lasts. The number's scripted device answers, and plays a 440 Hz tone into
each call (callgrid's simulator `:play`, from a local HTTP file): so both directions carry audio through
the media plane's mixer, not only RTP relayed.

Counted, per direction, over the whole call:
- caller -> callgrid: packets the callers sent; packets callgrid's RTP sockets took (`/metrics`
  callgrid_sip_rtp_packets_received); frames the media plane dropped (callgrid_media_live_frames_dropped);
  and, through the mixer, the caller's tone frames in what the answering device heard (its `/audio`).
- callgrid -> caller: packets callgrid sent, packets the callers received, sequence gaps (lost in
  flight; a tick the media loop skipped makes no gap: callgrid_media_ticks_skipped counts those), and the
  share of packets carrying the device's tone once it plays.
- pacing at the caller: each packet's lateness against its stream's 20 ms grid (arrival - (first arrival +
  20 ms x sequence offset)), p50 / p99 / max, and RFC 3550's interarrival jitter; callgrid's own tick
  lateness from /metrics.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import sys
import time
import wave
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from route_latency import _cpu_seconds, _free_port, _pct

from callgrid.media import codecs
from callgrid.sip import rtp, sdp
from callgrid.sip.message import Request, Response, SipParseError, parse, parse_name_addr
from callgrid.testing import CallgridServer, WebhookReceiver

NUMBER = "+14255551212"
DEVICE = "4:" + NUMBER
FRAME = 0.02
LINGER_SECONDS = 3.0
CALLER_TONE_HZ, DEVICE_TONE_HZ = 1000.0, 440.0
_t = np.arange(160) / 8000
# 1 kHz at 8 kHz repeats every 8 samples: one 20 ms frame is the whole signal.
CALLER_PAYLOAD = rtp.encode(rtp.PCMU, (6000 * np.sin(2 * np.pi * CALLER_TONE_HZ * _t)).astype(np.int16))


def _metrics(server: CallgridServer) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in server.client().download("/metrics").decode().splitlines():
        if line.startswith(("callgrid_sip_", "callgrid_media_")):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def _tone_frames(pcm16k: np.ndarray, hz: float) -> int:
    """20 ms frames of 16 kHz audio in which `hz` dominates (its power over half the frame's)."""
    frames = pcm16k[: len(pcm16k) // 320 * 320].reshape(-1, 320).astype(np.float64)
    probe = np.exp(-2j * np.pi * hz * np.arange(320) / 16000)
    power = np.abs(frames @ probe) ** 2 / (320 / 2)
    total = np.sum(frames**2, axis=1)
    return int(np.sum((total > 1e4) & (power > 0.5 * total)))


class Leg(asyncio.DatagramProtocol):
    """One caller: its dialog and its RTP socket."""

    def __init__(self, ua: UserAgent, index: int) -> None:
        self.ua, self.index = ua, index
        self.caller = f"+1206555{index:04d}"
        self.call_id = secrets.token_hex(8) + "@bench"
        self.tag = secrets.token_hex(4)
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self.remote_rtp: tuple[str, int] | None = None
        self.to = ""
        self.target = ""
        self.answered = asyncio.get_running_loop().create_future()
        self.bye_done = asyncio.get_running_loop().create_future()
        self.status = 0
        self.invite_at = 0.0
        self.setup_ms = 0.0
        # sending
        self.sending = False
        self.hung_up = False  # our BYE went (or callgrid's came): nothing more is sent to us after it
        self.start = 0.0
        self.sent = 0
        self.seq = secrets.randbelow(1 << 16)
        self.ts = secrets.randbelow(1 << 32)
        self.ssrc = secrets.randbelow(1 << 32)
        # receiving
        self.arrivals: list[tuple[float, int, int, bool]] = []  # time, extended seq, timestamp, tone?

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        now = time.monotonic()
        packet = rtp.parse_packet(data)
        if packet is None or packet.payload_type != rtp.PCMU:
            return
        self.arrivals.append((now, packet.sequence, packet.timestamp, packet.payload[:8] != rtp.SILENT_PAYLOAD[0][:8]))

    def send_due(self, now: float) -> None:
        if not self.sending or self.transport is None or self.remote_rtp is None:
            return
        due = int((now - self.start) / FRAME) + 1
        self.ua.burst = max(self.ua.burst, due - self.sent)
        while self.sent < due:  # a late wake sends what is due, as a phone's clock would have
            packet = rtp.build_packet(rtp.PCMU, self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, CALLER_PAYLOAD)
            self.transport.sendto(packet, self.remote_rtp)
            self.seq += 1
            self.ts += 160
            self.sent += 1

    def request(self, method: str, cseq: int, *, body: bytes = b"") -> Request:
        uri = self.target or f"sip:{NUMBER}@127.0.0.1:{self.ua.callgrid_port}"
        request = Request(method=method, uri=uri)
        request.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.ua.port};branch=z9hG4bK{secrets.token_hex(6)};rport")
        request.add("From", f"<sip:{self.caller}@127.0.0.1:{self.ua.port}>;tag={self.tag}")
        request.add("To", self.to or f"<sip:{NUMBER}@127.0.0.1:{self.ua.callgrid_port}>")
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{cseq} {method}")
        request.add("Max-Forwards", "70")
        request.add("Contact", f"<sip:{self.caller}@127.0.0.1:{self.ua.port}>")
        if body:
            request.add("Content-Type", "application/sdp")
            request.body = body
        return request

    def on_response(self, response: Response) -> None:
        method = response.cseq[1]
        if method == "INVITE" and response.status >= 200:
            if response.status < 300:
                self.to = response.get("To") or ""
                contact = response.get("Contact")
                self.target = parse_name_addr(contact).uri if contact else ""
                self.ua.send(self.request("ACK", 1))
                if not self.answered.done():
                    answer = sdp.parse(response.body)
                    self.remote_rtp = (answer.host, answer.port)
                    self.setup_ms = 1000 * (time.monotonic() - self.invite_at)
            if not self.answered.done():
                self.status = response.status
                self.answered.set_result(response.status)
        elif method == "BYE" and response.status >= 200 and not self.bye_done.done():
            self.bye_done.set_result(response.status)

    async def call(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        assert self.transport is not None
        self.rtp_port = self.transport.get_extra_info("sockname")[1]
        offer = sdp.build_offer("127.0.0.1", self.rtp_port)
        self.invite_at = time.monotonic()
        invite = self.request("INVITE", 1, body=offer)
        for attempt in range(6):  # RFC 3261 Timer A, by hand: 0.5, 1, 2, 4 s
            self.ua.send(invite)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.answered), 0.5 * 2**attempt)
                break
        if not self.answered.done() or self.status != 200:
            return
        self.start = time.monotonic()
        self.sending = True

    async def hang_up(self) -> None:
        # Not `sending`: the callers stop speaking (half a second) before they hang up.
        if self.hung_up or self.status != 200:
            return
        self.hung_up = True
        self.sending = False
        bye = self.request("BYE", 2)
        for attempt in range(5):
            self.ua.send(bye)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.bye_done), 0.5 * 2**attempt)
                break
        await asyncio.sleep(LINGER_SECONDS)  # what callgrid sent before it took the BYE, still to read
        if self.transport is not None:
            self.transport.close()


class UserAgent(asyncio.DatagramProtocol):
    """The callers' shared signalling socket."""

    def __init__(self, callgrid_port: int) -> None:
        self.callgrid_port = callgrid_port
        self.port = 0
        self.legs: dict[str, Leg] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.burst = 0  # the most packets a caller sent at once (its loop ran late)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, message: Request | Response) -> None:
        assert self.transport is not None
        self.transport.sendto(message.encode(), ("127.0.0.1", self.callgrid_port))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            message = parse(data)
        except SipParseError:
            return
        leg = self.legs.get(message.call_id)
        if leg is None:
            return
        if isinstance(message, Response):
            leg.on_response(message)
        elif message.method == "BYE":  # callgrid hanging up would be a failure; answer it anyway
            response = Response(status=200, reason="OK")
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                for value in message.get_all(name) if name == "Via" else [message.get(name) or ""]:
                    response.add(name, value)
            self.send(response)
            leg.sending = False
            leg.hung_up = True


def _receive_stats(leg: Leg, played_from: float) -> dict[str, Any]:
    arrivals = leg.arrivals
    if not arrivals:
        return {"received": 0, "gaps": 0, "late": [], "jitter": 0.0, "tone": 0, "after_play": 0}
    seqs, unwrapped, base = [], 0, arrivals[0][1]
    previous = base
    for _, seq, _, _ in arrivals:
        delta = (seq - previous) & 0xFFFF
        if delta > 0x8000:
            delta -= 0x10000
        unwrapped += delta
        previous = seq
        seqs.append(unwrapped)
    span = max(seqs) - min(seqs) + 1
    first = arrivals[0][0]
    late = [1000 * (t - (first + FRAME * s)) for (t, _, _, _), s in zip(arrivals, seqs, strict=True)]
    jitter = 0.0  # RFC 3550 A.8, in ms (8 kHz timestamps)
    for (t0, _, ts0, _), (t1, _, ts1, _) in itertools.pairwise(arrivals):
        d = abs((t1 - t0) * 1000 - ((ts1 - ts0) & 0xFFFFFFFF) / 8)
        jitter += (d - jitter) / 16
    after = [tone for t, _, _, tone in arrivals if t >= played_from + 0.3]
    return {
        "received": len(arrivals),
        "gaps": span - len(set(seqs)),
        "late": late,
        "jitter": jitter,
        "tone": sum(after),
        "after_play": len(after),
    }


async def _run(args: argparse.Namespace, server: CallgridServer, hook: WebhookReceiver, tone_url: str) -> dict:
    loop = asyncio.get_running_loop()
    ua = UserAgent(server.sip_port)  # type: ignore[attr-defined]
    await loop.create_datagram_endpoint(lambda: ua, local_addr=("127.0.0.1", 0))
    assert ua.transport is not None
    ua.port = ua.transport.get_extra_info("sockname")[1]
    legs = [Leg(ua, i) for i in range(args.calls)]
    for leg in legs:
        ua.legs[leg.call_id] = leg

    stop = False

    async def pace() -> None:
        while not stop:
            now = time.monotonic()
            for leg in legs:
                leg.send_due(now)
            await asyncio.sleep(FRAME - (time.monotonic() % FRAME) + 0.001)

    pacer = asyncio.ensure_future(pace())
    assert server.proc is not None
    cpu0, wall0, metrics0 = _cpu_seconds(server.proc.pid), time.monotonic(), _metrics(server)
    setups = []
    for leg in legs:  # ramp: --rate calls/s
        setups.append(asyncio.ensure_future(leg.call()))
        await asyncio.sleep(1 / args.rate)
    await asyncio.gather(*setups)
    up = [leg for leg in legs if leg.sending]
    all_up = time.monotonic()

    # The device plays its tone into every call (IncomingCall tells each call's serverCallId).
    def server_call_ids() -> dict[str, str]:
        found = {}
        for event in hook.events("Microsoft.Communication.IncomingCall"):
            data = event["data"]
            found[data["from"]["phoneNumber"]["value"]] = data["serverCallId"]
        return found

    scids: dict[str, str] = {}
    for _ in range(100):
        scids = server_call_ids()
        if all(leg.caller in scids for leg in up):
            break
        await asyncio.sleep(0.1)
    client = server.client()

    def play(scid: str) -> None:
        path = f"/callgrid/v1/calls/{scid}/participants/{DEVICE.replace(':', '%3A').replace('+', '%2B')}:play"
        client.request("POST", path, {"url": tone_url})

    await asyncio.gather(*(asyncio.to_thread(play, scids[leg.caller]) for leg in up if leg.caller in scids))
    played_at = time.monotonic()
    await asyncio.sleep(1.0)  # the plays' start (100 requests, each call's prompt) out of the window
    steady_from, cpu_steady_from, metrics_from = time.monotonic(), _cpu_seconds(server.proc.pid), _metrics(server)
    await asyncio.sleep(args.seconds)
    steady_to, metrics_to = time.monotonic(), _metrics(server)
    cpu_steady = _cpu_seconds(server.proc.pid)

    # What the device heard of each caller (through the mixer), fetched while the calls are up.
    def heard(scid: str) -> int:
        path = f"/callgrid/v1/calls/{scid}/participants/{DEVICE.replace(':', '%3A').replace('+', '%2B')}/audio"
        pcm = codecs.decode(client.download(path))
        return _tone_frames(pcm, CALLER_TONE_HZ)

    for leg in up:
        leg.sending = False  # stop speaking first, so every frame sent has had time to be mixed
    await asyncio.sleep(0.5)
    heard_frames = await asyncio.gather(*(asyncio.to_thread(heard, scids[leg.caller]) for leg in up))
    await asyncio.gather(*(leg.hang_up() for leg in up))
    stop = True
    pacer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pacer
    await asyncio.sleep(1.0)
    metrics1 = _metrics(server)
    cpu1, wall1 = _cpu_seconds(server.proc.pid), time.monotonic()
    ua.transport.close()

    stats = [_receive_stats(leg, played_at) for leg in up]
    late = [x for s in stats for x in s["late"]]

    def delta(name: str) -> float:
        return metrics1.get(name, 0.0) - metrics0.get(name, 0.0)

    sent_by_callers = sum(leg.sent for leg in up)
    return {
        "calls": args.calls,
        "answered": len(up),
        "failed": args.calls - len(up),
        # Calls the callers ended with BYE and callgrid answered 200 (all of them: callgrid hangs up none).
        "hungUpByCaller": sum(1 for leg in up if leg.bye_done.done() and leg.bye_done.result() == 200),
        "setupMs": {"p50": _pct([x.setup_ms for x in up], 50), "max": round(max(x.setup_ms for x in up), 1)},
        "concurrentSeconds": round(steady_to - all_up, 1),
        "callerToCallgrid": {
            "packetsSent": sent_by_callers,
            "largestBurstFromOneCaller": ua.burst,
            "packetsTakenByCallgrid": delta("callgrid_sip_rtp_packets_received"),
            "framesDroppedByMediaPlane": delta("callgrid_media_live_frames_dropped"),
            "framesDroppedInSteadyWindow": metrics_to.get("callgrid_media_live_frames_dropped", 0.0)
            - metrics_from.get("callgrid_media_live_frames_dropped", 0.0),
            "rtpFromWrongAddress": delta("callgrid_sip_rtp_from_wrong_address"),
            "toneFramesHeardThroughMixer": sum(heard_frames),
            "toneFramesMissingThroughMixer": sent_by_callers - sum(heard_frames),
        },
        "callgridToCaller": {
            "packetsSentByCallgrid": delta("callgrid_sip_rtp_packets_sent"),
            "packetsReceived": sum(s["received"] for s in stats),
            "sequenceGaps": sum(s["gaps"] for s in stats),
            "packetsWithDeviceTone": sum(s["tone"] for s in stats),
            "packetsAfterPlayStarted": sum(s["after_play"] for s in stats),
        },
        "pacingAtCaller": {
            "lateMs": {"p50": _pct(late, 50), "p99": _pct(late, 99), "max": round(max(late, default=0), 1)},
            "rfc3550JitterMs": {
                "mean": round(sum(s["jitter"] for s in stats) / max(1, len(stats)), 2),
                "max": round(max((s["jitter"] for s in stats), default=0), 2),
            },
        },
        "callgridTicks": {
            "maxLatenessMs": round(1000 * metrics1.get("callgrid_media_max_tick_lateness_seconds", 0.0), 1),
            "lateOver50ms": delta("callgrid_media_ticks_late_over50ms"),
            "lateOver50msInSteadyWindow": metrics_to.get("callgrid_media_ticks_late_over50ms", 0.0)
            - metrics_from.get("callgrid_media_ticks_late_over50ms", 0.0),
            "skipped": delta("callgrid_media_ticks_skipped"),
        },
        "callgridCpu": {
            "wholeRunPercent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
            "steadyPercent": round(100 * (cpu_steady - cpu_steady_from) / (steady_to - steady_from), 1),
        },
        "steadyWindowSeconds": round(steady_to - steady_from, 1),
    }


def _tone_wav(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    pcm = (6000 * np.sin(2 * np.pi * DEVICE_TONE_HZ * t)).astype(np.int16)
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    wav = _tone_wav(args.seconds + 30)
    files = web.Application()
    files.router.add_get("/tone.wav", lambda _r: web.Response(body=wav, content_type="audio/wav"))
    runner = web.AppRunner(files)
    await runner.setup()
    file_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", file_port).start()
    sip_port = _free_port()
    workdir = Path(args.workdir) if args.workdir else Path(__import__("tempfile").mkdtemp(prefix="sip-audio-"))
    server = CallgridServer(workdir / "callgrid", clock="system", extra_args=["--sip-port", str(sip_port)])
    server.sip_port = sip_port  # type: ignore[attr-defined]
    try:
        await asyncio.to_thread(server.start)
        with WebhookReceiver() as hook:
            server.own_number(NUMBER)
            server.set_device(DEVICE, "answer")
            server.subscribe(hook.url, name="audio")
            return await _run(args, server, hook, f"http://127.0.0.1:{file_port}/tone.wav")
    finally:
        await asyncio.to_thread(server.stop)
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="calls placed per second while ramping up")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long all calls talk at once")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args)), indent=2))


if __name__ == "__main__":
    main()
