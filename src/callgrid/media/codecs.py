"""Audio in and out of the media plane: decode what callers hand us, encode what recordings hand back.

Inside callgrid all audio is mono signed 16-bit PCM in numpy int16 arrays at 16 kHz (24 kHz for some
media streams), so every other part of the media plane handles one shape only. This module is the border:
`decode` turns any file an application plays (WAV of any kind, MP3, anything FFmpeg reads) into that
shape; `resample` and `StreamResampler` move between rates, the latter 20 ms frame by 20 ms frame for live
streams; `encode` writes the formats Call Automation recordings come in (wav, with one channel per
participant when unmixed; mp3; mp4, with a black video track for audioVideo content); and `dtmf_tone`
and `detect_dtmf` make and hear key presses. FFmpeg (through PyAV) does the codec work, since it is
already fast and exact; numpy does the rest.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import wave
from collections.abc import Sequence
from fractions import Fraction
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.stream import VideoStream

Pcm = npt.NDArray[np.int16]
"""Mono signed 16-bit samples: callgrid's one audio shape."""

DEFAULT_RATE: Final = 16_000
FORMATS: Final = ("wav", "mp3", "mp4")

_MP3_BIT_RATE: Final = 32_000  # plenty for 16/24 kHz speech and valid for every MP3 sample rate
_AAC_BIT_RATE: Final = 48_000  # AAC's default (128k) makes the encoder ~5x slower for no audible gain on speech
_VIDEO_SIZE: Final = (160, 120)
_VIDEO_FRAME_MS: Final = 1000  # one black frame a second: the track exists, costs almost nothing
_MS: Final = Fraction(1, 1000)


class UnsupportedAudio(ValueError):
    """The bytes are not audio FFmpeg can decode: empty, garbage, or a file without an audio stream."""


def _pcm(samples: npt.ArrayLike, what: str = "pcm") -> Pcm:
    array = np.asarray(samples)
    if array.dtype != np.int16:
        raise ValueError(f"{what} must be int16 samples, not {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (mono), not shape {array.shape}")
    return np.ascontiguousarray(array)


def _frame(pcm: Pcm, rate: int, *, timed: bool = False) -> AudioFrame:
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    if timed:
        # Encoders need it: from pts 0 the AAC encoder's priming gets negative timestamps, which the mp4
        # muxer writes as an edit list telling decoders to drop it (without, 64 ms too much audio).
        frame.pts, frame.time_base = 0, Fraction(1, rate)
    return frame


def _mono(frame: AudioFrame) -> Pcm:
    """The samples of an s16p frame, channels averaged (read from its planes: to_ndarray is slower)."""
    samples, planes = frame.samples, frame.planes
    if len(planes) == 1:
        return np.frombuffer(memoryview(planes[0]), np.int16, samples)
    # Averaged here, not by FFmpeg: it downmixes 3+ channels of unspecified layout (plain multi-channel
    # WAV, our own unmixed recordings) to silence. Integer mean, rounded half up.
    total = np.zeros(samples, np.int32)
    for plane in planes:
        total += np.frombuffer(memoryview(plane), np.int16, samples)
    return ((total + len(planes) // 2) // len(planes)).astype(np.int16)


def duration_seconds(pcm: Pcm, rate: int = DEFAULT_RATE) -> float:
    return len(pcm) / rate


# --- decoding ---------------------------------------------------------------------------------------------


def decode(data: bytes, *, rate: int = DEFAULT_RATE) -> Pcm:
    """Any audio file (WAV, MP3, MP4/AAC, ...) to mono int16 at `rate`: channels averaged, resampled.

    A corrupt packet is skipped and a truncated file yields what it holds, as ffmpeg does; audio that
    decodes to nothing at all raises `UnsupportedAudio`.
    """
    if not data:
        raise UnsupportedAudio("no audio: the data is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as exc:
        raise UnsupportedAudio(f"not an audio file FFmpeg recognises ({len(data)} bytes): {exc.strerror}") from exc
    with container:
        if not container.streams.audio:
            kinds = ", ".join(stream.type for stream in container.streams) or "no streams"
            raise UnsupportedAudio(f"no audio stream in this {container.format.name} data ({kinds})")
        stream = container.streams.audio[0]
        to_mono = _ToMono(rate)
        skipped = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    skipped += 1
                    continue
                for frame in frames:
                    to_mono.push(frame)
        except av.FFmpegError as exc:
            if not to_mono.parts:
                raise UnsupportedAudio(f"undecodable {container.format.name} audio: {exc.strerror}") from exc
        to_mono.flush()
        if not to_mono.parts and skipped:
            raise UnsupportedAudio(f"undecodable {container.format.name} audio: all {skipped} packets were corrupt")
        pcm = np.concatenate(to_mono.parts) if to_mono.parts else np.zeros(0, np.int16)
        return pcm[: _mp4_length(container, stream, rate, len(pcm))]


def _mp4_length(container: InputContainer, stream: AudioStream, rate: int, decoded: int) -> int:
    """Where the audio of an MP4 ends: FFmpeg drops the encoder's priming an edit list names, not the
    padding of the last AAC frame (up to 64 ms at 16 kHz); the track's duration says where the audio ends."""
    if "mp4" not in container.format.name.split(",") or not stream.duration or stream.time_base is None:
        return decoded
    declared = round(float(stream.duration * stream.time_base) * rate)
    frame = math.ceil(max(stream.codec_context.frame_size, 1) * rate / stream.rate)
    # Only the last frame's padding: a shorter declared length than that is the file's error, not ours to act on.
    return declared if declared < decoded <= declared + frame else decoded


class _ToMono:
    """Decoded frames of any format, rate and channels to mono int16 at one rate."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.parts: list[Pcm] = []
        self._resampler: AudioResampler | None = None
        self._setup: tuple[str, str, int] | None = None

    def push(self, frame: AudioFrame) -> None:
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if setup != self._setup:
            # PyAV's resampler takes its input setup from its first frame; a stream that changes rate or
            # channels (concatenated MP3s do) needs a new one.
            self.flush()
            self._resampler, self._setup = AudioResampler(format="s16p", rate=self.rate), setup
        assert self._resampler is not None
        self.parts.extend(_mono(out) for out in self._resampler.resample(frame))

    def flush(self) -> None:
        if self._resampler is not None:
            # A pass-through resampler hands back the None it was given.
            self.parts.extend(_mono(out) for out in self._resampler.resample(None) if out is not None)
            self._resampler = self._setup = None


# --- resampling -------------------------------------------------------------------------------------------


def resample(pcm: Pcm, src_rate: int, dst_rate: int) -> Pcm:
    """Mono int16 from one rate to another (FFmpeg's swresample: windowed-sinc, anti-aliased)."""
    pcm = _pcm(pcm)
    if src_rate == dst_rate or not len(pcm):
        return pcm.copy()
    resampler = AudioResampler(format="s16", layout="mono", rate=dst_rate)
    frames = [*resampler.resample(_frame(pcm, src_rate)), *resampler.resample(None)]
    return np.concatenate([np.zeros(0, np.int16), *(_mono(frame) for frame in frames if frame is not None)])


class StreamResampler:
    """Resample a live stream frame by frame: `frame_ms` in, `frame_ms` out, as a media stream needs.

    One resampler carries its filter state across frames, so the output is sample for sample what
    resampling the whole stream at once gives: no clicks at frame boundaries. The filter's delay (a
    millisecond) is paid in leading silence, so from the first frame on every frame in gives a frame out.
    """

    def __init__(self, src_rate: int, dst_rate: int, *, frame_ms: int = 20) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self.frame_samples = dst_rate * frame_ms // 1000
        self._resampler: AudioResampler | None = None
        self.delay = 0
        """Samples of silence the output starts with: the filter's delay."""
        if src_rate != dst_rate:
            self._resampler = AudioResampler(format="s16", layout="mono", rate=dst_rate)
            self.delay = self._delay(src_rate, dst_rate, frame_ms)
        self._buffer = np.zeros(self.delay, np.int16)

    @staticmethod
    def _delay(src_rate: int, dst_rate: int, frame_ms: int) -> int:
        """Samples one frame comes out short by: the filter's delay, measured on a throwaway resampler."""
        probe = AudioResampler(format="s16", layout="mono", rate=dst_rate)
        src_samples = src_rate * frame_ms // 1000
        produced = sum(f.samples for f in probe.resample(_frame(np.zeros(src_samples, np.int16), src_rate)))
        return max(0, src_samples * dst_rate // src_rate - produced)

    def feed(self, pcm: Pcm) -> list[Pcm]:
        """Samples at the source rate (any count) in; the whole output frames now ready out."""
        pcm = _pcm(pcm)
        if self._resampler is None:
            return self._frames(np.concatenate([self._buffer, pcm]))
        converted = self._resampler.resample(_frame(pcm, self.src_rate)) if len(pcm) else []
        return self._frames(np.concatenate([self._buffer, *(_mono(frame) for frame in converted)]))

    def flush(self) -> list[Pcm]:
        """The end of the stream: what the filter still holds, the last frame padded with silence."""
        tail = []
        if self._resampler is not None:
            tail = [_mono(frame) for frame in self._resampler.resample(None) if frame is not None]
        pending = np.concatenate([self._buffer, *tail])
        if not len(pending):
            return []
        padding = -len(pending) % self.frame_samples
        return self._frames(np.concatenate([pending, np.zeros(padding, np.int16)]))

    def _frames(self, samples: Pcm) -> list[Pcm]:
        whole = len(samples) // self.frame_samples * self.frame_samples
        self._buffer = samples[whole:].copy()
        return list(samples[:whole].reshape(-1, self.frame_samples).copy())


# --- encoding ---------------------------------------------------------------------------------------------


def _channels(channels: Pcm | Sequence[Pcm]) -> list[Pcm]:
    """One array per channel, all as long as the longest (the shorter padded with silence)."""
    arrays = [_pcm(channels)] if isinstance(channels, np.ndarray) else [_pcm(c, "channel") for c in channels]
    if not arrays:
        raise ValueError("no channels to encode")
    length = max(len(array) for array in arrays)
    return [np.pad(array, (0, length - len(array))) for array in arrays]


def _mixed(channels: Pcm | Sequence[Pcm]) -> Pcm:
    """The channels summed into one, as a call's mixer does (clipped, not averaged: each voice keeps its level)."""
    arrays = _channels(channels)
    if len(arrays) == 1:
        return arrays[0]
    total = np.sum(arrays, axis=0, dtype=np.int32)
    return np.clip(total, -32768, 32767).astype(np.int16)


def encode_wav(channels: Pcm | Sequence[Pcm], rate: int = DEFAULT_RATE) -> bytes:
    """16-bit PCM WAV: one array mono; several, one channel each (an unmixed recording's channel per participant)."""
    arrays = _channels(channels)
    interleaved = np.stack(arrays, axis=1).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(len(arrays))
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(interleaved.tobytes())
    return out.getvalue()


def _audio_to_encode(codec: str, channels: Pcm | Sequence[Pcm], rate: int) -> Pcm:
    """The channels mixed, once the encoder is known to exist, take `rate` and have something to encode."""
    try:
        rates = av.codec.Codec(codec, "w").audio_rates
    except av.codec.codec.UnknownCodecError:
        raise RuntimeError(f"this FFmpeg build has no {codec} encoder: use wav") from None
    if rates and rate not in rates:
        raise ValueError(f"{codec} cannot encode at {rate} Hz (it takes {', '.join(map(str, rates))})")
    pcm = _mixed(channels)
    if not len(pcm):
        raise ValueError(f"{codec} cannot encode no audio at all (a WAV can be empty, an MP3 or MP4 cannot)")
    return pcm


def encode_mp3(channels: Pcm | Sequence[Pcm], rate: int = DEFAULT_RATE) -> bytes:
    """Mono MP3 (LAME), several channels mixed: Call Automation records mp3 mixed only."""
    pcm = _audio_to_encode("libmp3lame", channels, rate)
    out = io.BytesIO()
    # The mp3 muxer seeks back to write the Xing/LAME header, which lets decoders trim the encoder's padding.
    with av.open(out, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.bit_rate = _MP3_BIT_RATE
        # PyAV converts and re-frames for the encoder (s16p, 576 or 1152 samples a frame).
        container.mux(stream.encode(_frame(pcm, rate, timed=True)))
        container.mux(stream.encode(None))
    return out.getvalue()


def encode_mp4(channels: Pcm | Sequence[Pcm], rate: int = DEFAULT_RATE, *, video: bool = False) -> bytes:
    """MP4 with a mono AAC track (several channels mixed) and, with `video`, a black H.264 track as long.

    Call Automation records mp4 mixed only, and audioVideo content in mp4 only; callgrid has no video, so
    the track is black, one frame a second. The file is fast-start (index first) so players can stream it,
    which FFmpeg can only do on a real file: it is written to a temporary one.
    """
    pcm = _audio_to_encode("aac", channels, rate)
    with tempfile.TemporaryDirectory(prefix="callgrid-mp4-") as tmp:
        path = os.path.join(tmp, "recording.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            audio = container.add_stream("aac", rate=rate, layout="mono")
            audio.bit_rate = _AAC_BIT_RATE
            if video:
                _black_video(container, duration_ms=round(len(pcm) * 1000 / rate))
            container.mux(audio.encode(_frame(pcm, rate, timed=True)))
            container.mux(audio.encode(None))
        with open(path, "rb") as written:
            return written.read()


def _video_codec() -> Literal["libx264", "mpeg4"]:
    names: tuple[Literal["libx264", "mpeg4"], ...] = ("libx264", "mpeg4")
    for name in names:  # H.264 where the FFmpeg build has it; MPEG-4 part 2 is always there
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError("this FFmpeg build has neither an H.264 nor an MPEG-4 video encoder")


def _black_video(container: av.container.OutputContainer, *, duration_ms: int) -> None:
    """A black track `duration_ms` long: a frame each second, the last one's duration cut to the end."""
    width, height = _VIDEO_SIZE
    stream = container.add_stream(_video_codec(), rate=1000 // _VIDEO_FRAME_MS)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = _MS  # millisecond timestamps, so the track ends where the audio does
    if stream.codec_context.name == "libx264":
        stream.options = {"preset": "ultrafast"}
    black = np.zeros((height, width, 3), np.uint8)
    packets: list[av.Packet[VideoStream]] = []
    for start in range(0, duration_ms, _VIDEO_FRAME_MS):
        frame = av.VideoFrame.from_ndarray(black, format="rgb24")
        frame.pts, frame.time_base = start, _MS
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    for packet in packets:
        # Encoders leave durations unset and the muxer would give the last frame a whole second.
        assert packet.pts is not None and packet.time_base == _MS
        packet.duration = min(_VIDEO_FRAME_MS, duration_ms - packet.pts)
    container.mux(packets)


def encode(fmt: str, channels: Pcm | Sequence[Pcm], rate: int = DEFAULT_RATE, *, video: bool = False) -> bytes:
    """A recording in Call Automation's format `fmt` ('wav', 'mp3' or 'mp4'); `video` (audioVideo) needs mp4."""
    fmt = fmt.lower()
    if video and fmt != "mp4":
        raise ValueError(f"audioVideo recordings are mp4 only, not {fmt}")
    if fmt == "wav":
        return encode_wav(channels, rate)
    if fmt == "mp3":
        return encode_mp3(channels, rate)
    if fmt == "mp4":
        return encode_mp4(channels, rate, video=video)
    raise ValueError(f"unknown recording format {fmt!r} (expected one of {', '.join(FORMATS)})")


# --- DTMF -------------------------------------------------------------------------------------------------

_DTMF_ROWS: Final = (697.0, 770.0, 852.0, 941.0)
_DTMF_COLUMNS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
_DTMF_KEYS: Final = ("123A", "456B", "789C", "*0#D")
DTMF_TONES: Final = "".join(_DTMF_KEYS)

_DTMF_PEAK: Final = 32767 * 10 ** (-10 / 20)  # the two sines together peak at -10 dBFS
_DTMF_RAMP_S: Final = 0.003  # raised-cosine edges: a tone switched on hard clicks (and splatters energy)
_BLOCK_S: Final = 0.020
_MIN_RMS: Final = 32768 * 10 ** (-45 / 20)  # quieter than -45 dBFS is not a key press
_MIN_TONE_SHARE: Final = 0.7  # the two tones hold this much of the block's energy; speech spreads its own
_MAX_TWIST: Final = 10 ** (8 / 10)  # row and column powers within 8 dB of each other
_MIN_LEAD: Final = 10 ** (6 / 10)  # the row (column) 6 dB above the next strongest row (column)
_MIN_BLOCKS: Final = 2  # hops a press must last: 30 ms of tone at least (Q.24 asks for 40)


def dtmf_tone(tone: str, seconds: float = 0.1, rate: int = DEFAULT_RATE) -> Pcm:
    """The key `tone` (0-9, *, #, A-D) for `seconds`: its row and column sines, peaking at -10 dBFS."""
    key = tone.upper()
    if len(key) != 1 or key not in DTMF_TONES:
        raise ValueError(f"no DTMF tone {tone!r} (expected one of {DTMF_TONES})")
    index = DTMF_TONES.index(key)
    low, high = _DTMF_ROWS[index // 4], _DTMF_COLUMNS[index % 4]
    t = np.arange(round(seconds * rate)) / rate
    signal = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    ramp = min(round(_DTMF_RAMP_S * rate), len(t) // 2)
    if ramp:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        signal[:ramp] *= edge
        signal[len(t) - ramp :] *= edge[::-1]
    return np.rint(signal * (_DTMF_PEAK / 2)).astype(np.int16)


def _goertzel(blocks: npt.NDArray[np.float64], frequencies: Sequence[float], rate: int) -> npt.NDArray[np.float64]:
    """|DFT|^2 of each block (rows) at each frequency: the Goertzel recursion, run on all blocks at once."""
    coefficients = 2 * np.cos(2 * np.pi * np.asarray(frequencies) / rate)
    s1 = np.zeros((blocks.shape[0], len(frequencies)))
    s2 = np.zeros_like(s1)
    for column in blocks.T:  # one step per sample of a block, not per block: 320 steps however long the audio
        s1, s2 = column[:, None] + coefficients * s1 - s2, s1
    power: npt.NDArray[np.float64] = s1 * s1 + s2 * s2 - coefficients * s1 * s2
    return power


def detect_dtmf(pcm: Pcm, rate: int = DEFAULT_RATE) -> list[tuple[float, str]]:
    """The key presses in `pcm`: (start in seconds, key) for each, in order.

    Each 20 ms block (every 10 ms) is a key when its strongest row and column tones hold most of its
    energy, are within 8 dB of each other and stand 6 dB over the other rows and columns; a press is two
    or more blocks in a row of the same key. Speech fails the energy share, silence the level.
    """
    pcm = _pcm(pcm)
    size = round(_BLOCK_S * rate)
    hop = size // 2
    if len(pcm) < size:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(pcm, size)[::hop]
    blocks = windows.astype(np.float64)
    energy = np.einsum("ij,ij->i", blocks, blocks)
    # A sine of energy E in the block has |DFT|^2 = E * size / 2.
    power = _goertzel(blocks, _DTMF_ROWS + _DTMF_COLUMNS, rate) * (2 / size)
    rows, columns = power[:, :4], power[:, 4:]
    row, column = rows.argmax(axis=1), columns.argmax(axis=1)
    picked = np.arange(len(blocks))
    row_power, column_power = rows[picked, row], columns[picked, column]
    next_row = np.sort(rows, axis=1)[:, -2]
    next_column = np.sort(columns, axis=1)[:, -2]
    keyed = (
        (energy >= _MIN_RMS**2 * size)
        & (row_power + column_power >= _MIN_TONE_SHARE * energy)
        & (row_power * _MAX_TWIST >= column_power)
        & (column_power * _MAX_TWIST >= row_power)
        & (row_power >= _MIN_LEAD * next_row)
        & (column_power >= _MIN_LEAD * next_column)
    )
    keys = [
        _DTMF_KEYS[r][c] if k else "" for r, c, k in zip(row.tolist(), column.tolist(), keyed.tolist(), strict=True)
    ]
    presses: list[tuple[float, str]] = []
    start = 0
    for index in range(1, len(keys) + 1):
        if index == len(keys) or keys[index] != keys[start]:
            if keys[start] and index - start >= _MIN_BLOCKS:
                presses.append((round(start * hop / rate, 3), keys[start]))
            start = index
    return presses
