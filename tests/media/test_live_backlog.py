"""A live party's voice (RTP from a SIP trunk) survives the media loop running late: what queued while
the loop was stalled is mixed when it catches up, not dropped as a peer's excess."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from callgrid.media.codecs import Pcm
from callgrid.media.plane import FRAME_SAMPLES, LIVE_BACKLOG_FRAMES, SILENCE, MediaPlane
from callgrid.platform.media_port import MediaEvent

# Hears or speaks in real time (it stalls the loop on purpose): runs in the suite's serial pass.
# A media plane of its own, in this process: no server of the suite's, so the same on either store.
pytestmark = [pytest.mark.realtime, pytest.mark.store_independent]

VOICE = np.full(FRAME_SAMPLES, 3000, dtype=np.int16)


async def _nothing(event: MediaEvent) -> None:
    return None


async def test_frames_queued_while_the_loop_was_stalled_are_all_mixed(tmp_path: Path) -> None:
    plane = MediaPlane(tmp_path)
    plane.start(_nothing)
    heard: list[Pcm] = []
    try:
        plane.attach("call-1", "4:+12065550100", lambda frame: None)
        plane.attach("call-1", "4:+14255551212", heard.append)
        await asyncio.sleep(0.1)
        # The plane's loop (its own thread) is blocked for 600 ms, and the packets that arrive meanwhile
        # wait behind it; when it runs again they are read in one go.
        assert plane._loop is not None
        plane._loop.call_soon_threadsafe(time.sleep, 0.6)
        await asyncio.sleep(0.3)
        frames = 3 * LIVE_BACKLOG_FRAMES
        for _ in range(frames):
            plane.feed("call-1", "4:+12065550100", VOICE)
        await asyncio.sleep(0.9)
    finally:
        await plane.stop()
    voiced = sum(1 for frame in heard if frame is not SILENCE and np.any(frame))
    assert voiced == frames
    assert plane.metrics.counters["liveFramesDropped"] == 0


async def test_a_peer_sending_faster_than_real_time_is_still_capped(tmp_path: Path) -> None:
    plane = MediaPlane(tmp_path)
    plane.start(_nothing)
    try:
        plane.attach("call-1", "4:+12065550100", lambda frame: None)
        plane.attach("call-1", "4:+14255551212", lambda frame: None)
        await asyncio.sleep(0.1)
        for _ in range(3 * LIVE_BACKLOG_FRAMES):  # a burst, with the loop on time
            plane.feed("call-1", "4:+12065550100", VOICE)
    finally:
        await plane.stop()
    assert plane.metrics.counters["liveFramesDropped"] >= LIVE_BACKLOG_FRAMES
