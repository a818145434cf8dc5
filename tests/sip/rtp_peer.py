"""A caller's media on loopback, for SIPp's calls: a UDP socket that sends G.711 µ-law from PCM and RFC
4733 key presses to where callgrid's RTP comes from (symmetric RTP), and keeps what it receives."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from callgrid.media.codecs import Pcm, resample
from callgrid.sip import rtp

KEYS = "0123456789*#ABCD"


class RtpPeer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.remote: tuple[str, int] | None = None
        self.received: list[rtp.RtpPacket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._seq, self._ts, self._ssrc = 1000, 8000, 0x1234ABCD

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            packet = rtp.parse_packet(data)
            if packet is None:
                continue
            with self._lock:
                self.remote = self.remote or (addr[0], addr[1])
                self.received.append(packet)

    def wait_for_media(self, timeout: float = 20.0) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while self.remote is None:
            if time.monotonic() > deadline:
                raise AssertionError("no RTP from callgrid")
            time.sleep(0.02)
        return self.remote

    def _send(self, payload_type: int, payload: bytes, *, marker: bool = False, advance: int = 160) -> None:
        assert self.remote is not None
        packet = rtp.build_packet(payload_type, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc, payload, marker)
        self.sock.sendto(packet, self.remote)
        self._seq += 1
        self._ts += advance

    def press(self, keys: str, *, payload_type: int = 101) -> None:
        """Each key as RFC 4733 events: 100 ms of updates, then the end packet three times."""
        for key in keys:
            event = KEYS.index(key.upper())
            start = self._ts
            for i in range(1, 6):
                duration = 160 * i
                end = i == 5
                payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
                repeats = 3 if end else 1
                for _ in range(repeats):
                    packet = rtp.build_packet(payload_type, self._seq & 0xFFFF, start, self._ssrc, payload, i == 1)
                    assert self.remote is not None
                    self.sock.sendto(packet, self.remote)
                    self._seq += 1
                time.sleep(0.02)
            self._ts = start + 160 * 5
            self.talk(np.zeros(1600, dtype=np.int16))  # 100 ms between keys

    def talk(self, pcm16k: Pcm) -> None:
        """Speak 16 kHz PCM as µ-law packets, paced at 20 ms."""
        pcm8k = resample(pcm16k, 16000, 8000)
        pad = (-len(pcm8k)) % 160
        pcm8k = np.concatenate([pcm8k, np.zeros(pad, dtype=np.int16)])
        start = time.monotonic()
        for i, frame in enumerate(pcm8k.reshape(-1, 160)):
            self._send(rtp.PCMU, rtp.encode(rtp.PCMU, frame))
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def heard(self) -> Pcm:
        """What callgrid sent, decoded, in arrival order, at 16 kHz."""
        with self._lock:
            packets = [p for p in self.received if p.payload_type in (rtp.PCMU, rtp.PCMA)]
        if not packets:
            return np.zeros(0, dtype=np.int16)
        pcm8k = np.concatenate([rtp.decode(p.payload_type, p.payload) for p in packets])
        return resample(pcm8k, 8000, 16000)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
