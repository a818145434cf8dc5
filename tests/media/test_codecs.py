"""The media plane's codecs: decode anything to mono int16, resample, encode recordings, DTMF both ways."""

from __future__ import annotations

import io
import os
import time
import wave

import av
import numpy as np
import numpy.typing as npt
import pytest

from callgrid.media import codecs
from callgrid.media.codecs import Pcm, UnsupportedAudio

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


def sine(freq: float, seconds: float, rate: int = 16000, amplitude: float = 8000) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant(pcm: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[spectrum.argmax()])


def rms(pcm: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def wav_bytes(frames: npt.NDArray[np.int16], rate: int, width: int = 2) -> bytes:
    """A WAV through the stdlib: `frames` is (samples,) or (samples, channels) of int16, written `width` bytes wide."""
    if frames.ndim == 1:
        frames = frames[:, None]
    if width == 1:
        data = ((frames.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 2:
        data = frames.astype("<i2").tobytes()
    else:  # 24-bit: the int16 in the top two bytes
        wide = (frames.astype(np.int32) << 8).astype("<i4").view(np.uint8).reshape(-1, 4)
        data = wide[:, :3].tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(data)
    return out.getvalue()


def pyav_bytes(pcm: Pcm, rate: int, fmt: str, codec: str) -> bytes:
    """Audio written by PyAV itself (formats the stdlib cannot write: mu-law WAV, 44.1 kHz stereo MP3)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def seconds(stream: av.stream.Stream) -> float:
    assert stream.duration is not None and stream.time_base is not None
    return float(stream.duration * stream.time_base)


def read_wav(data: bytes) -> tuple[int, int, npt.NDArray[np.int16]]:
    with wave.open(io.BytesIO(data), "rb") as reader:
        channels, rate = reader.getnchannels(), reader.getframerate()
        frames = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").reshape(-1, channels)
    return channels, rate, frames


# --- decode -----------------------------------------------------------------------------------------------


def test_a_16k_mono_wav_decodes_to_its_own_samples() -> None:
    pcm = sine(440, 1.0) + np.arange(16000, dtype=np.int16) % 7  # not a pure sine: every sample counts
    decoded = codecs.decode(wav_bytes(pcm, 16000))
    assert decoded.dtype == np.int16
    assert np.array_equal(decoded, pcm)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_wav_decodes_to_mono_16k(rate: int, width: int, channels: int) -> None:
    pcm = sine(1000, 0.5, rate)
    decoded = codecs.decode(wav_bytes(np.stack([pcm] * channels, axis=1), rate, width))
    assert abs(len(decoded) - 8000) <= 1
    assert dominant(decoded, 16000) == pytest.approx(1000, abs=5)
    assert rms(decoded) == pytest.approx(rms(pcm), rel=0.03)


def test_a_mu_law_wav_decodes() -> None:
    pcm = sine(1000, 0.5, 8000)
    decoded = codecs.decode(pyav_bytes(pcm, 8000, "wav", "pcm_mulaw"), rate=24000)
    assert len(decoded) == 12000
    assert dominant(decoded, 24000) == pytest.approx(1000, abs=5)
    assert rms(decoded) == pytest.approx(rms(pcm), rel=0.05)


def test_stereo_is_averaged() -> None:
    left, right = np.full(1600, 3000, np.int16), np.full(1600, 9000, np.int16)
    decoded = codecs.decode(wav_bytes(np.stack([left, right], axis=1), 16000))
    assert np.all(decoded == 6000)


@pytest.mark.parametrize("channels", [3, 5])
def test_many_channels_of_no_named_layout_are_averaged_not_silenced(channels: int) -> None:
    # FFmpeg's own downmix turns these to silence; an unmixed recording is exactly this.
    frames = np.zeros((4410, channels), np.int16)
    frames[:, 0], frames[:, -1] = 3000, 9000
    decoded = codecs.decode(wav_bytes(frames, 44100))
    assert len(decoded) == 1600
    assert np.all(np.abs(decoded[100:-100] - 12000 // channels) <= 2)


def test_an_mp3_decodes() -> None:
    pcm = sine(1000, 2.0, 44100)
    decoded = codecs.decode(pyav_bytes(pcm, 44100, "mp3", "libmp3lame"))
    assert codecs.duration_seconds(decoded) == pytest.approx(2.0, abs=0.05)
    assert dominant(decoded, 16000) == pytest.approx(1000, abs=5)


def test_mp3s_of_two_rates_end_to_end_decode_whole() -> None:
    # The stream changes rate halfway: the resampler must be set up again, not fail or drop the rest.
    data = codecs.encode_mp3([sine(1000, 1.0, 16000)], 16000) + codecs.encode_mp3([sine(1000, 1.0, 24000)], 24000)
    decoded = codecs.decode(data)
    assert codecs.duration_seconds(decoded) == pytest.approx(2.0, abs=0.1)
    assert rms(decoded[-8000:]) == pytest.approx(rms(sine(1000, 1.0)), rel=0.1)


def test_a_truncated_mp3_gives_what_it_holds() -> None:
    data = codecs.encode_mp3([sine(1000, 4.0)])
    decoded = codecs.decode(data[: len(data) // 2])
    assert codecs.duration_seconds(decoded) == pytest.approx(2.0, abs=0.2)


def test_an_empty_wav_is_no_samples() -> None:
    assert len(codecs.decode(wav_bytes(np.zeros(0, np.int16), 16000))) == 0


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4000), b"hello, this is not audio\n" * 50, bytes(5000), b'{"kind": "json"}'],
    ids=["empty", "random", "text", "zeros", "json"],
)
def test_garbage_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedAudio, match=r"no audio|not an audio file"):
        codecs.decode(data)


def test_a_file_without_audio_is_unsupported() -> None:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(UnsupportedAudio, match=r"no audio stream.*video"):
        codecs.decode(out.getvalue())


def test_unsupported_audio_is_a_value_error() -> None:
    assert issubclass(UnsupportedAudio, ValueError)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_a_minute_decodes_quickly(fmt: str) -> None:
    pcm = sine(1000, 60.0, 44100)
    data = (
        wav_bytes(np.stack([pcm, pcm], axis=1), 44100) if fmt == "wav" else pyav_bytes(pcm, 44100, "mp3", "libmp3lame")
    )
    started = time.process_time()
    decoded = codecs.decode(data)
    elapsed = time.process_time() - started
    assert len(decoded) == 960000
    assert elapsed < 2.0  # ~0.1 s measured: this catches only a gross slowdown


def test_duration_seconds() -> None:
    assert codecs.duration_seconds(np.zeros(24000, np.int16)) == 1.5
    assert codecs.duration_seconds(np.zeros(24000, np.int16), rate=24000) == 1.0


# --- resample ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (24000, 16000), (22050, 16000), (8000, 16000)])
def test_resample_keeps_pitch_level_and_length(src: int, dst: int) -> None:
    pcm = sine(1000, 1.0, src)
    out = codecs.resample(pcm, src, dst)
    assert out.dtype == np.int16
    assert abs(len(out) - dst) <= 1
    assert dominant(out, dst) == pytest.approx(1000, abs=2)
    assert rms(out) == pytest.approx(rms(pcm), rel=0.02)


def test_resample_to_the_same_rate_is_a_copy() -> None:
    pcm = sine(1000, 0.1)
    out = codecs.resample(pcm, 16000, 16000)
    assert np.array_equal(out, pcm) and out is not pcm


def test_resample_wants_int16_mono() -> None:
    with pytest.raises(ValueError, match="int16"):
        codecs.resample(np.zeros(10, np.float32), 16000, 24000)
    with pytest.raises(ValueError, match="one-dimensional"):
        codecs.resample(np.zeros((2, 10), np.int16), 16000, 24000)


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (16000, 24000), (22050, 16000)])
def test_stream_resampler_frame_in_frame_out_matches_one_shot(src: int, dst: int) -> None:
    pcm = sine(440, 2.0, src, amplitude=10000)
    stream = codecs.StreamResampler(src, dst)
    frames: list[Pcm] = []
    for start in range(0, len(pcm), src // 50):
        out = stream.feed(pcm[start : start + src // 50])
        assert len(out) == 1 and len(out[0]) == dst // 50  # from the very first frame: no frame of latency
        frames.extend(out)
    frames.extend(stream.flush())
    assert all(len(frame) == dst // 50 for frame in frames)
    streamed = np.concatenate(frames)
    whole = codecs.resample(pcm, src, dst)
    assert 0 < stream.delay <= dst // 500  # the filter's delay, a millisecond, paid in leading silence
    assert not np.any(streamed[: stream.delay])
    # Sample for sample what resampling the whole at once gives: nothing happens at frame boundaries.
    assert np.array_equal(streamed[stream.delay : stream.delay + len(whole)], whole)
    assert not np.any(streamed[stream.delay + len(whole) :])


def test_stream_resampler_takes_any_chunk_sizes() -> None:
    pcm = sine(440, 1.0, 24000)
    stream = codecs.StreamResampler(24000, 16000)
    frames: list[Pcm] = []
    position = 0
    for size in [1, 7, 0, 333, 480, 1000, 2] * 20:
        frames.extend(stream.feed(pcm[position : position + size]))
        position += size
    frames.extend(stream.feed(pcm[position:]))
    frames.extend(stream.flush())
    streamed = np.concatenate(frames)
    whole = codecs.resample(pcm, 24000, 16000)
    assert np.array_equal(streamed[stream.delay : stream.delay + len(whole)], whole)


def test_stream_resampler_at_one_rate_only_frames() -> None:
    stream = codecs.StreamResampler(16000, 16000)
    pcm = sine(440, 0.05)
    frames = stream.feed(pcm) + stream.flush()
    assert [len(frame) for frame in frames] == [320, 320, 320]
    assert np.array_equal(np.concatenate(frames)[:800], pcm)
    assert not np.any(np.concatenate(frames)[800:])


def test_stream_resampler_cost_per_frame() -> None:
    stream = codecs.StreamResampler(24000, 16000)
    pcm = sine(440, 10.0, 24000)
    started = time.process_time()
    for start in range(0, len(pcm), 480):
        stream.feed(pcm[start : start + 480])
    per_frame = (time.process_time() - started) / 500
    assert per_frame < 0.002  # ~50 us measured; 20 ms frames leave room for hundreds of streams a core


# --- encode -----------------------------------------------------------------------------------------------


def test_the_av_wheel_has_the_recording_encoders() -> None:
    for name in ("libmp3lame", "aac"):
        assert av.codec.Codec(name, "w").is_encoder


@pytest.mark.parametrize("rate", [16000, 24000])
def test_wav_round_trip_is_exact(rate: int) -> None:
    pcm = sine(1000, 1.3, rate) + np.arange(round(1.3 * rate), dtype=np.int16) % 5
    assert np.array_equal(codecs.decode(codecs.encode_wav([pcm], rate), rate=rate), pcm)
    assert np.array_equal(codecs.decode(codecs.encode_wav(pcm, rate), rate=rate), pcm)  # one array: mono


def test_an_unmixed_wav_has_a_channel_per_participant() -> None:
    participants = [sine(500, 1.0), sine(1000, 0.5), sine(1500, 0.75)]
    channels, rate, frames = read_wav(codecs.encode_wav(participants))
    assert (channels, rate, len(frames)) == (3, 16000, 16000)
    for index, pcm in enumerate(participants):
        assert np.array_equal(frames[: len(pcm), index], pcm)
        assert not np.any(frames[len(pcm) :, index])  # the shorter padded with silence


@pytest.mark.parametrize("fmt", ["mp3", "mp4"])
@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize("seconds", [0.013, 1.0, 2.371])
def test_compressed_round_trip_keeps_length_and_pitch(fmt: str, rate: int, seconds: float) -> None:
    pcm = sine(1000, seconds, rate)
    decoded = codecs.decode(codecs.encode(fmt, [pcm], rate), rate=rate)
    assert abs(codecs.duration_seconds(decoded, rate) - seconds) <= 0.05
    if seconds >= 1:
        assert dominant(decoded, rate) == pytest.approx(1000, abs=2)
        assert rms(decoded) == pytest.approx(rms(pcm), rel=0.1)


@pytest.mark.parametrize("fmt", ["mp3", "mp4"])
def test_several_channels_are_mixed_in_mp3_and_mp4(fmt: str) -> None:
    low, high = sine(1000, 1.0, amplitude=6000), sine(2500, 0.5, amplitude=6000)
    decoded = codecs.decode(codecs.encode(fmt, [low, high]))
    assert codecs.duration_seconds(decoded) == pytest.approx(1.0, abs=0.05)
    first, second = decoded[1000:7000], decoded[9000:15000]  # both voices, then the longer one alone
    assert rms(first) == pytest.approx(rms(low[1000:7000] + high[1000:7000]), rel=0.1)
    assert dominant(second, 16000) == pytest.approx(1000, abs=3)
    spectrum = np.abs(np.fft.rfft(first * np.hanning(len(first))))
    freqs = np.fft.rfftfreq(len(first), 1 / 16000)
    assert {round(float(f), -2) for f in freqs[np.argsort(spectrum)[-2:]]} == {1000, 2500}


def test_mp4_with_video_has_a_black_track_as_long_as_the_audio() -> None:
    pcm = sine(1000, 2.37)
    data = codecs.encode_mp4([pcm], video=True)
    with av.open(io.BytesIO(data), mode="r") as container:
        audio, video = container.streams.audio[0], container.streams.video[0]
        assert audio.codec_context.name == "aac"
        assert video.codec_context.name in ("h264", "mpeg4")
        assert [seconds(audio), seconds(video)] == pytest.approx([2.37, 2.37], abs=0.05)
        picture = next(container.decode(video=0)).to_ndarray(format="gray")
        assert picture.max() <= 20  # black (limited-range luma: 16)
    decoded = codecs.decode(data)
    assert codecs.duration_seconds(decoded) == pytest.approx(2.37, abs=0.05)
    assert dominant(decoded, 16000) == pytest.approx(1000, abs=2)


def test_mp4_is_fast_start() -> None:
    data = codecs.encode_mp4([sine(1000, 1.0)])
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_encode_dispatches_on_the_format() -> None:
    pcm = sine(1000, 0.2)
    assert codecs.encode("wav", [pcm]) == codecs.encode_wav([pcm])
    assert codecs.encode("WAV", [pcm], 24000) == codecs.encode_wav([pcm], 24000)
    assert codecs.encode("mp3", [pcm]).startswith(b"ID3")
    assert codecs.encode("mp4", [pcm], video=True)[4:8] == b"ftyp"
    with pytest.raises(ValueError, match="unknown recording format 'ogg'"):
        codecs.encode("ogg", [pcm])
    with pytest.raises(ValueError, match="mp4 only"):
        codecs.encode("mp3", [pcm], video=True)


def test_encoders_refuse_what_they_cannot_write() -> None:
    with pytest.raises(ValueError, match="no channels"):
        codecs.encode_wav([])
    with pytest.raises(ValueError, match="int16"):
        codecs.encode_wav([np.zeros(10, np.float64)])
    with pytest.raises(ValueError, match="cannot encode at 16001 Hz"):
        codecs.encode_mp3([sine(1000, 0.1)], 16001)
    for fmt in ("mp3", "mp4"):
        with pytest.raises(ValueError, match="no audio at all"):
            codecs.encode(fmt, [np.zeros(0, np.int16)])
    assert len(codecs.decode(codecs.encode_wav([np.zeros(0, np.int16)]))) == 0  # a WAV can be empty


@pytest.mark.parametrize(("fmt", "video"), [("wav", False), ("mp3", False), ("mp4", False), ("mp4", True)])
def test_a_minute_encodes_quickly(fmt: str, video: bool) -> None:
    channels = [sine(1000, 60.0), sine(700, 60.0)]
    started = time.process_time()
    data = codecs.encode(fmt, channels, video=video)
    elapsed = time.process_time() - started
    assert len(codecs.decode(data)) == 960000
    assert elapsed < 5.0  # well under half a second measured: this catches only a gross slowdown


# --- DTMF -------------------------------------------------------------------------------------------------


def noise(seconds: float, level: float, rate: int = 16000, seed: int = 0) -> Pcm:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, round(seconds * rate)), -32768, 32767).astype(np.int16)


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> Pcm:
    """Voiced speech, roughly: a wandering 90-220 Hz pitch with all its harmonics under vowel formants,
    syllable by syllable, with breathy noise. What DTMF detectors must not mistake for keys."""
    rng = np.random.default_rng(seed)
    vowels = np.array([(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)])
    n, syllable = round(seconds * rate), rate // 5
    count = n // syllable + 1
    f0 = np.convolve(np.repeat(rng.uniform(90, 220, count), syllable)[:n], np.ones(800) / 800, mode="same")
    formants = np.repeat(vowels[rng.integers(0, len(vowels), count)], syllable, axis=0)[:n]
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = np.zeros(n)
    for k in range(1, 40):
        harmonic = k * f0
        gain = sum(1 / (1 + ((harmonic - formants[:, i]) / 90) ** 2) for i in range(3)) / k**0.5
        signal += np.where(harmonic < 3800, gain, 0) * np.sin(k * phase)
    envelope = np.sin(np.pi * (np.arange(n) % syllable) / syllable) ** 2
    signal = signal * envelope + rng.normal(0, 0.05, n)
    pcm: Pcm = np.rint(signal / np.abs(signal).max() * 16000).astype(np.int16)
    return pcm


def test_a_tone_is_two_sines_at_minus_10_dbfs() -> None:
    tone = codecs.dtmf_tone("1")
    assert len(tone) == 1600
    assert 20 * np.log10(np.abs(tone).max() / 32767) == pytest.approx(-10, abs=0.3)
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone))))
    freqs = np.fft.rfftfreq(len(tone), 1 / 16000)
    peaks = sorted(float(freqs[i]) for i in np.argsort(spectrum)[-4:])
    assert peaks[0] == pytest.approx(697, abs=10) and peaks[-1] == pytest.approx(1209, abs=10)
    assert len(codecs.dtmf_tone("d", 0.25, rate=24000)) == 6000
    with pytest.raises(ValueError, match="no DTMF tone 'E'"):
        codecs.dtmf_tone("E")


@pytest.mark.parametrize("key", list(codecs.DTMF_TONES))
def test_every_key_is_heard(key: str) -> None:
    pcm = np.concatenate([np.zeros(1000, np.int16), codecs.dtmf_tone(key, 0.06), np.zeros(1000, np.int16)])
    assert [k for _, k in codecs.detect_dtmf(pcm)] == [key]


def sequence(keys: str, lead: float, rate: int = 16000) -> tuple[Pcm, list[float]]:
    """`keys` 100 ms each with 100 ms between, after `lead` seconds of silence; and when each starts."""
    gap = np.zeros(round(0.1 * rate), np.int16)
    parts, starts = [np.zeros(round(lead * rate), np.int16)], []
    for index, key in enumerate(keys):
        starts.append(lead + index * 0.2)
        parts += [codecs.dtmf_tone(key, 0.1, rate), gap]
    return np.concatenate(parts), starts


@pytest.mark.parametrize("noise_level", [0, 300, 1500])
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_a_key_sequence_in_noise(noise_level: int, rate: int) -> None:
    pcm, starts = sequence("12#9", lead=0.237, rate=rate)
    noisy = np.clip(pcm.astype(np.int32) + noise(len(pcm) / rate, noise_level, rate), -32768, 32767).astype(np.int16)
    presses = codecs.detect_dtmf(noisy, rate)
    assert [key for _, key in presses] == ["1", "2", "#", "9"]
    assert [start for start, _ in presses] == pytest.approx(starts, abs=0.02)


def test_the_same_key_twice_is_two_presses() -> None:
    pcm, starts = sequence("55", lead=0.05)
    presses = codecs.detect_dtmf(pcm)
    assert [key for _, key in presses] == ["5", "5"]
    assert [start for start, _ in presses] == pytest.approx(starts, abs=0.02)


def test_silence_noise_and_speech_are_no_keys() -> None:
    assert codecs.detect_dtmf(np.zeros(16000, np.int16)) == []
    assert codecs.detect_dtmf(noise(3.0, 3000)) == []
    assert codecs.detect_dtmf(np.zeros(100, np.int16)) == []
    for seed in range(5):
        assert codecs.detect_dtmf(speech_like(10.0, seed=seed)) == [], seed


def test_keys_between_speech() -> None:
    pcm = np.concatenate(
        [
            speech_like(1.0, seed=1),
            codecs.dtmf_tone("7"),
            speech_like(0.5, seed=2),
            codecs.dtmf_tone("*"),
            speech_like(1.0, seed=3),
        ]
    )
    presses = codecs.detect_dtmf(pcm)
    assert [key for _, key in presses] == ["7", "*"]
    assert [start for start, _ in presses] == pytest.approx([1.0, 1.6], abs=0.02)


def test_keys_survive_an_mp3_recording() -> None:
    pcm, starts = sequence("0*AD", lead=0.3)
    presses = codecs.detect_dtmf(codecs.decode(codecs.encode_mp3([pcm])))
    assert [key for _, key in presses] == list("0*AD")
    assert [start for start, _ in presses] == pytest.approx(starts, abs=0.02)
