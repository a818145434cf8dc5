"""G.711 and RTP packets: the codecs' reference points and round trips, RFC 4733 events reported once."""

from __future__ import annotations

import struct

import numpy as np

from callgrid.sip import rtp


def test_g711_encodes_the_reference_points() -> None:
    # As the reference implementation (CPython audioop, Sun g711.c) codes them.
    samples = np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert list(rtp.encode(rtp.PCMU, samples)) == [0xFF, 0x7E, 0x80, 0x00, 0xCE, 0x4E]
    assert list(rtp.encode(rtp.PCMA, samples)) == [0xD5, 0x55, 0xAA, 0x2A, 0xFA, 0x7A]


def test_g711_round_trips_within_its_quantisation() -> None:
    t = np.arange(8000) / 8000
    tone = (12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for codec in (rtp.PCMU, rtp.PCMA):
        back = rtp.decode(codec, rtp.encode(codec, tone)).astype(np.float64)
        noise = back - tone
        snr = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum(noise**2))
        assert snr > 30, (codec, snr)


def test_packets_round_trip_and_bad_ones_are_refused() -> None:
    data = rtp.build_packet(0, 65535, 2**32 - 1, 7, b"\x01\x02", marker=True)
    packet = rtp.parse_packet(data)
    assert packet is not None
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.payload, packet.marker) == (
        0,
        65535,
        2**32 - 1,
        7,
        b"\x01\x02",
        True,
    )
    assert rtp.parse_packet(b"\x80\x00") is None
    assert rtp.parse_packet(b"\x40" + bytes(20)) is None  # version 1
    assert rtp.parse_packet(b"\x9f" + bytes(11)) is None  # 15 CSRCs promised, none there


def test_a_key_is_reported_once_at_its_end() -> None:
    keys: list[str] = []
    session = rtp.RtpSession(on_audio=lambda frame: None, on_key=keys.append, counters=lambda name: None)
    session.set_remote("127.0.0.1", 4000, rtp.PCMU, 101, "sendrecv")
    for timestamp, event in ((100, 5), (900, 11)):
        for duration, end in ((160, False), (320, False), (480, True), (480, True), (480, True)):
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            session.datagram_received(rtp.build_packet(101, 1, timestamp, 9, payload), ("127.0.0.1", 4000))
    session.datagram_received(rtp.build_packet(101, 1, 5000, 9, struct.pack("!BBH", 1, 0x80, 1)), ("10.9.9.9", 4000))
    assert keys == ["5", "#"]


def test_resampling_keeps_the_voice_band_and_drops_what_8_khz_cannot_carry() -> None:
    t = np.arange(16000) / 16000
    up, down = rtp.Upsampler(), rtp.Downsampler()

    def level(pcm: np.ndarray) -> float:
        return float(np.sqrt(np.mean(pcm[400:].astype(np.float64) ** 2)))

    for frequency, kept in ((1000, True), (3000, True), (6000, False)):
        tone = (10000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
        narrow = np.concatenate([down.feed(frame) for frame in tone.reshape(-1, 320)])
        assert len(narrow) == 8000
        ratio = level(narrow) / level(tone)
        assert (ratio > 0.8) if kept else (ratio < 0.1), (frequency, ratio)
    t8 = np.arange(8000) / 8000
    tone8 = (10000 * np.sin(2 * np.pi * 1000 * t8)).astype(np.int16)
    wide = np.concatenate([up.feed(frame) for frame in tone8.reshape(-1, 160)])
    assert len(wide) == 16000
    assert 0.8 < level(wide) / level(tone8) < 1.2
