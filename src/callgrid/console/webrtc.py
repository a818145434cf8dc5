"""The softphone's WebRTC end (aiortc): the peer connection, the track the browser hears, its microphone.

Kept apart from the softphone's sessions so that aiortc (and the ICE, DTLS and SRTP stacks it brings) is
loaded on the first softphone, not on every server start.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from callgrid.errors import InvalidRequest
from callgrid.media.codecs import Pcm
from callgrid.media.plane import FRAME_SAMPLES, RATE, SILENCE

QUEUE_FRAMES = 25  # 500 ms: a late browser gets fresh audio, not a growing backlog


class PlaneTrack(MediaStreamTrack):
    """What the softphone's party hears, as an audio track paced at 20 ms (silence when nothing)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: collections.deque[Pcm] = collections.deque(maxlen=QUEUE_FRAMES)
        self._start: float | None = None
        self._pts = 0

    def push(self, frame: Pcm) -> None:
        self.queue.append(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            delay = self._start + self._pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        pcm = self.queue.popleft() if self.queue else SILENCE
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


def peer(
    on_audio: Callable[[MediaStreamTrack], None], on_failed: Callable[[], Awaitable[None]]
) -> tuple[RTCPeerConnection, PlaneTrack]:
    """A peer connection sending a `PlaneTrack`; `on_audio` gets the browser's audio track (during `answer`),
    `on_failed` runs if the connection fails or closes."""
    pc = RTCPeerConnection()
    track = PlaneTrack()
    pc.addTrack(track)

    @pc.on("track")
    def on_track(remote: MediaStreamTrack) -> None:
        if remote.kind == "audio":
            on_audio(remote)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await on_failed()

    return pc, track


async def answer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Answer the browser's offer (the answer is `pc.localDescription`); InvalidRequest, and `pc` closed, if
    the offer cannot be used."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, AttributeError, TypeError) as exc:
        await pc.close()
        raise InvalidRequest(f"The SDP offer could not be used: {exc}") from None


async def microphone(remote: MediaStreamTrack, speak: Callable[[Pcm], None], closed: Callable[[], bool]) -> None:
    """The browser's audio, resampled to the plane's 16 kHz mono, to `speak` in whole 20 ms frames, until
    the track ends or `closed()`."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    pending = np.zeros(0, dtype=np.int16)
    while not closed():
        try:
            frame = await remote.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        for out in resampler.resample(frame):
            pending = np.concatenate([pending, out.to_ndarray().reshape(-1).astype(np.int16)])
        whole = len(pending) - len(pending) % FRAME_SAMPLES
        if whole == 0:
            continue
        chunk, pending = pending[:whole], pending[whole:]
        speak(chunk)
