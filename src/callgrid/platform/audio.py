"""Audio, as far as callgrid needs it: how long a WAV or MP3 file plays, and writing a WAV (silence with
DTMF tones) for recordings. Pure functions; fetching and decoding prompts is `media/prompts.py`."""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

# ACS plays WAV only as mono 16-bit PCM at 16 kHz (its documented prompt format); MP3 as is.
PLAY_WAV_RATE = 16000


class UnsupportedAudio(ValueError):
    """The bytes are not audio ACS would play (the message says why)."""


@dataclass
class Probe:
    """What fetching one play source found: how long it plays, or why it cannot."""

    duration: float | None = None
    sub_code: int | None = None  # 8535 invalid file format, 8536 download failed, 8565 not simulated
    message: str | None = None
    key: str | None = None  # where the media plane finds its audio (`media/prompts.py`)

    @property
    def ok(self) -> bool:
        return self.duration is not None

    def to_doc(self) -> dict[str, object]:
        return {"duration": self.duration, "subCode": self.sub_code, "message": self.message, "key": self.key}


def wav_duration(data: bytes, *, require_play_format: bool = True) -> float:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UnsupportedAudio("not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise UnsupportedAudio("the fmt chunk is truncated")
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise UnsupportedAudio("the data chunk comes before the fmt chunk")
            audio_format, channels, rate, byte_rate, _, bits = fmt
            if require_play_format and (audio_format, channels, rate, bits) != (1, 1, PLAY_WAV_RATE, 16):
                raise UnsupportedAudio(
                    f"WAV must be mono 16-bit PCM at {PLAY_WAV_RATE} Hz; this one is format {audio_format}, "
                    f"{channels} channel(s), {bits}-bit, {rate} Hz"
                )
            if byte_rate <= 0:
                raise UnsupportedAudio("the WAV byte rate is zero")
            available = min(size, len(data) - body)
            return float(available) / float(byte_rate)
        offset = body + size + (size & 1)
    raise UnsupportedAudio("the WAV file has no data chunk")


def mp3_duration(data: bytes) -> float:
    import mutagen.mp3  # only for MP3 prompts: not loaded with every server

    try:
        info = mutagen.mp3.MP3(io.BytesIO(data)).info  # type: ignore[no-untyped-call]
    except mutagen.MutagenError as exc:
        raise UnsupportedAudio(f"not an MP3 file ({exc})") from None
    if info is None:
        raise UnsupportedAudio("not an MP3 file")
    length = float(info.length)
    if not math.isfinite(length) or length <= 0:
        raise UnsupportedAudio("the MP3 file has no audio frames")
    return length


def duration_of(data: bytes) -> float:
    """How long a WAV or MP3 file plays, in seconds."""
    duration = wav_duration(data) if data[:4] == b"RIFF" else mp3_duration(data)
    if duration <= 0:
        raise UnsupportedAudio("the file holds no audio")
    return duration


# ---- writing audio (recordings) -----------------------------------------------------------------

RECORDING_RATE = 16000
TONE_SECONDS = 0.2
_DTMF = {
    "one": (697, 1209),
    "two": (697, 1336),
    "three": (697, 1477),
    "a": (697, 1633),
    "four": (770, 1209),
    "five": (770, 1336),
    "six": (770, 1477),
    "b": (770, 1633),
    "seven": (852, 1209),
    "eight": (852, 1336),
    "nine": (852, 1477),
    "c": (852, 1633),
    "asterisk": (941, 1209),
    "zero": (941, 1336),
    "pound": (941, 1477),
    "d": (941, 1633),
}
DTMF_TONES = frozenset(_DTMF)


def wav_bytes(duration: float, tones: list[tuple[float, str]] | None = None, rate: int = RECORDING_RATE) -> bytes:
    """Mono 16-bit PCM: `duration` seconds of silence with each (offset, tone) as a DTMF pair."""
    frames = max(0, round(duration * rate))
    samples = bytearray(frames * 2)
    for offset, tone in tones or []:
        low, high = _DTMF[tone]
        start = max(0, round(offset * rate))
        for i in range(start, min(frames, start + round(TONE_SECONDS * rate))):
            t = (i - start) / rate
            value = int(8000 * (math.sin(2 * math.pi * low * t) + math.sin(2 * math.pi * high * t)))
            struct.pack_into("<h", samples, i * 2, value)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(samples),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(samples),
    )
    return header + bytes(samples)
