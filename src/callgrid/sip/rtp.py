"""RTP (RFC 3550) for one call leg over the trunk: G.711 µ-law/A-law audio both ways, RFC 4733
telephone-events in, at 8 kHz on the wire and 16 kHz in the media plane.

Packets are taken only from the address the far end's SDP named (its host; the port may differ behind
a NAT): RTP from anywhere else is dropped and counted. What the leg hears leaves one packet per media
plane tick, so the far end gets a steady 20 ms stream, silence included.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from callgrid.media.codecs import Pcm
from callgrid.media.plane import SILENCE
from callgrid.sip.sdp import PCMA, PCMU

log = logging.getLogger(__name__)

SAMPLES_8K = 160  # 20 ms at 8 kHz
FRAME_16K = 320  # 20 ms at 16 kHz, the media plane's frame
EVENT_KEYS = "0123456789*#ABCD"


# ---- G.711 (ITU-T G.711), as tables: a 16-bit sample's code, and each code's sample ----------------------


def _ulaw_encode(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # On 14-bit magnitudes with a bias of 33, segment by segment (the reference implementation's way).
    value = samples >> 2
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), value)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((value >> (segment + 1)) & 0x0F))
    out: npt.NDArray[np.uint8] = ((code ^ mask) & 0xFF).astype(np.uint8)
    return out


def _ulaw_decode(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    codes = ~codes & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_encode(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    sign = np.where(samples >= 0, 0x80, 0x00)
    magnitude = np.minimum(np.where(samples >= 0, samples, -samples - 1), 32767) >> 3
    exponent = np.where(magnitude >= 32, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    out: npt.NDArray[np.uint8] = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return out


def _alaw_decode(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    codes = codes ^ 0x55
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32)
_ALL_CODES = np.arange(256, dtype=np.int32)
ENCODE = {PCMU: _ulaw_encode(_ALL_SAMPLES), PCMA: _alaw_encode(_ALL_SAMPLES)}
DECODE = {PCMU: _ulaw_decode(_ALL_CODES), PCMA: _alaw_decode(_ALL_CODES)}
SILENT_PAYLOAD = {codec: bytes([int(table[32768])]) * SAMPLES_8K for codec, table in ENCODE.items()}


def encode(codec: int, pcm8k: Pcm) -> bytes:
    return bytes(ENCODE[codec][pcm8k.astype(np.int32) + 32768])


def decode(codec: int, payload: bytes) -> Pcm:
    out: Pcm = DECODE[codec][np.frombuffer(payload, dtype=np.uint8)]
    return out


# ---- 8 kHz <-> 16 kHz -----------------------------------------------------------------------------------

# A windowed-sinc low-pass at a quarter of 16 kHz (G.711's 4 kHz band edge), 31 taps: cheap enough for
# every packet of every call, and without the threads an FFmpeg filter graph per leg would bring.
_TAPS = 31
_n = np.arange(_TAPS) - (_TAPS - 1) / 2
_LOWPASS = (np.sinc(_n / 2) / 2 * np.kaiser(_TAPS, 6.0)).astype(np.float64)
_LOWPASS /= _LOWPASS.sum()


class Upsampler:
    """8 kHz -> 16 kHz, frame by frame, with the filter's state carried across frames."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float64)

    def feed(self, pcm8k: Pcm) -> Pcm:
        stuffed = np.zeros(2 * len(pcm8k), dtype=np.float64)
        stuffed[::2] = pcm8k
        signal = np.concatenate([self._history, stuffed])
        self._history = signal[-(_TAPS - 1) :]
        out = np.convolve(signal, 2 * _LOWPASS, mode="valid")
        result: Pcm = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return result


class Downsampler:
    """16 kHz -> 8 kHz, frame by frame (frames of an even length)."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float64)

    def reset(self) -> None:
        """Silence went by: the filter holds nothing."""
        self._history[:] = 0.0

    def feed(self, pcm16k: Pcm) -> Pcm:
        signal = np.concatenate([self._history, pcm16k.astype(np.float64)])
        self._history = signal[-(_TAPS - 1) :]
        out = np.convolve(signal, _LOWPASS, mode="valid")[::2]
        result: Pcm = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return result


# ---- packets --------------------------------------------------------------------------------------------


class RtpPacket:
    __slots__ = ("marker", "payload", "payload_type", "sequence", "ssrc", "timestamp")

    def __init__(self, payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool):
        self.payload_type, self.sequence, self.timestamp = payload_type, sequence, timestamp
        self.ssrc, self.payload, self.marker = ssrc, payload, marker


def parse_packet(data: bytes) -> RtpPacket | None:
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    first, second, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack("!H", data[offset + 2 : offset + 4])
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))


def build_packet(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc) + payload


# ---- a leg's session ------------------------------------------------------------------------------------


class RtpSession(asyncio.DatagramProtocol):
    """One leg's RTP socket. `on_audio(frame16k)` gets what the far end says, 20 ms at a time;
    `on_key(key)` each key it pressed (RFC 4733, once per event however often the end is repeated)."""

    def __init__(
        self,
        *,
        on_audio: Callable[[Pcm], None],
        on_key: Callable[[str], None],
        counters: Callable[[str], None],
    ) -> None:
        self.on_audio, self.on_key, self.count = on_audio, on_key, counters
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.remote: tuple[str, int] | None = None
        self.codec = PCMU
        self.event_payload: int | None = None
        self.sending = True
        self._ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._up = Upsampler()
        self._down = Downsampler()
        self._pending = np.zeros(0, dtype=np.int16)  # 16 kHz audio short of a whole frame
        self._events_seen: set[int] = set()  # timestamps of telephone-events already reported
        self.received = self.sent = 0

    @classmethod
    async def open(cls, host: str, **kwargs: Any) -> RtpSession:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(lambda: cls(**kwargs), local_addr=(host, 0))
        protocol.local_port = transport.get_extra_info("sockname")[1]
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not derive from asyncio's class, but is one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def set_remote(self, host: str, port: int, codec: int, event_payload: int | None, direction: str) -> None:
        self.remote = (host, port)
        self.codec = codec
        self.event_payload = event_payload
        self.sending = direction in ("sendrecv", "recvonly")  # the far end's view: we send when it receives

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.remote is None or addr[0] != self.remote[0]:
            self.count("rtpFromWrongAddress")
            return
        packet = parse_packet(data)
        if packet is None:
            self.count("rtpMalformed")
            return
        self.received += 1
        if packet.payload_type == self.event_payload:
            self._event(packet)
        elif packet.payload_type in (PCMU, PCMA):
            audio = np.concatenate([self._pending, self._up.feed(decode(packet.payload_type, packet.payload))])
            whole = len(audio) // FRAME_16K * FRAME_16K
            self._pending = audio[whole:]
            for frame in audio[:whole].reshape(-1, FRAME_16K):
                self.on_audio(frame)
        else:
            self.count("rtpUnknownPayload")

    def _event(self, packet: RtpPacket) -> None:
        if len(packet.payload) < 4:
            return
        event, flags = packet.payload[0], packet.payload[1]
        if not flags & 0x80 or packet.timestamp in self._events_seen:
            return  # report a key at its end, once (the end packet is sent three times)
        self._events_seen.add(packet.timestamp)
        if len(self._events_seen) > 256:
            self._events_seen = {packet.timestamp}
        if event < len(EVENT_KEYS):
            self.on_key(EVENT_KEYS[event])

    def hear(self, frame16k: Pcm) -> None:
        """What the leg hears this tick: sent as one 20 ms packet."""
        if self.transport is None or self.remote is None:
            return
        self._timestamp = (self._timestamp + SAMPLES_8K) & 0xFFFFFFFF
        self._sequence = (self._sequence + 1) & 0xFFFF
        if frame16k is SILENCE:
            # Most ticks of most calls: no filtering or coding, the codec's silence as it is.
            self._down.reset()
            payload = SILENT_PAYLOAD[self.codec]
        else:
            payload = encode(self.codec, self._down.feed(frame16k))
        if not self.sending:
            return
        packet = build_packet(self.codec, self._sequence, self._timestamp, self._ssrc, payload)
        self.transport.sendto(packet, self.remote)
        self.sent += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
