"""The media plane: every connected call's audio, mixed and paced in 20 ms frames.

Inside, audio is 16 kHz mono 16-bit PCM (numpy int16), one frame every 20 ms. Each tick, per call:
what each party says (a simulated party's speech or keys, queued by `speak`/`tones`), the app's prompts
(`play`, to everyone or to `playTo`), and the app's own streamed audio (bidirectional media streaming)
are mixed the way ACS mixes: a party hears the others and the app, never itself; the app's media stream
and transcription hear the parties, never the app; a recording hears everyone.

Frames are paced on the system's monotonic clock, whatever the simulation clock says: audio is real
time. The simulation clock still times operations (PlayCompleted, silence timeouts), so on a virtual
clock a test moves the clock for those and lets audio (speech recognised, frames streamed) happen on
its own. Calls with nothing to hear or say are not ticked; the frames they skip are silence.

The plane runs in a thread of its own, with its own event loop: the ticks, the mixing and the media
streams' sockets live there, so HTTP, store and delivery work on the server's loop cannot delay a frame
(those pauses were the whole tail of frame pacing). The plane's state belongs to that thread. The port's
commands are handed over with `call_soon_threadsafe`, in the order they were given, without waiting; the
few calls that answer (`speak`, `heard`, `in_call`, `stop_recording`) wait for the plane's loop to run
them. What goes the other way (events for the call core, a live party's frames) is handed to the
server's loop the same way, a tick's frames at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from callgrid.media import codecs
from callgrid.media.codecs import Pcm
from callgrid.media.metrics import MediaMetrics
from callgrid.media.prompts import PromptCache
from callgrid.platform.media_port import MediaEvent, Party, StreamOptions

log = logging.getLogger(__name__)

RATE = 16000
FRAME_SECONDS = 0.02
FRAME_SAMPLES = 320
# What a party heard is kept for the last HEARD_SECONDS of the call, in a ring of frames allocated when it
# first hears something (a test fetches it, also after the call); an app's own leg keeps none (it hears
# through its media stream).
HEARD_SECONDS = 300
MAX_CATCH_UP_TICKS = 50  # a loop stalled for longer than a second skips ahead instead of racing
MAX_JUMP_FRAMES = 3600 * 50
ENDED_CALLS_KEPT = 100  # what parties of ended calls heard stays fetchable for the latest ones
LIVE_BACKLOG_FRAMES = 10  # a live party's voice waits at most 200 ms to be mixed

SILENCE: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
# DTMF tone names as ACS spells them -> the key each stands for.
TONE_KEYS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "asterisk": "*",
    "pound": "#",
    "a": "A",
    "b": "B",
    "c": "C",
    "d": "D",
}


def frames_of(pcm: Pcm) -> list[Pcm]:
    """Cut audio into 20 ms frames, the last one padded with silence."""
    pcm = np.asarray(pcm, dtype=np.int16)
    if len(pcm) == 0:
        return []
    pad = (-len(pcm)) % FRAME_SAMPLES
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    return list(pcm.reshape(-1, FRAME_SAMPLES))


def mix(frames: list[Pcm]) -> Pcm | None:
    if not frames:
        return None
    if len(frames) == 1:
        return frames[0]
    # Summed in place in 32 bits, then clipped: a third of np.stack's cost on the 20 ms path.
    total = frames[0].astype(np.int32)
    for frame in frames[1:]:
        total += frame
    mixed: Pcm = np.clip(total, -32768, 32767, out=total).astype(np.int16)
    return mixed


class FrameSink:
    """Something that takes a call's audio every tick: a media stream, a transcription, a listener."""

    def on_frame(self, tick: int, mixed: Pcm | None, by_party: dict[str, Pcm | None]) -> None:
        raise NotImplementedError

    def on_tones(self, raw_id: str, tones: list[str]) -> None:
        """A party pressed keys (media streams with DTMF forward them)."""

    def close(self) -> None:
        pass


class _Ears:
    """What one party heard: a ring of the last HEARD_SECONDS of frames, each slot tagged with its tick, so
    keeping an hour of calls costs one array per party and no object per frame (the garbage collector
    walked millions of them, stalling the 20 ms ticks). When the call ends, only the span heard is kept."""

    SLOTS = HEARD_SECONDS * 50

    def __init__(self) -> None:
        self._frames: npt.NDArray[np.int16] | None = None
        self._ticks: npt.NDArray[np.int64] | None = None
        self._kept: tuple[int, npt.NDArray[np.int16]] | None = None  # (first tick, frames) after the call

    def write(self, tick: int, frame: Pcm) -> None:
        if self._frames is None or self._ticks is None:
            self._frames = np.zeros((self.SLOTS, FRAME_SAMPLES), dtype=np.int16)
            self._ticks = np.full(self.SLOTS, -1, dtype=np.int64)
        slot = tick % self.SLOTS
        self._frames[slot] = frame
        self._ticks[slot] = tick

    def render(self, start: int, end: int) -> Pcm:
        """Ticks [start, end) as PCM: silence where nothing was heard (or it is older than the ring)."""
        out = np.zeros((max(0, end - start), FRAME_SAMPLES), dtype=np.int16)
        if self._kept is not None:
            first, frames = self._kept
            lo, hi = max(start, first), min(end, first + len(frames))
            if lo < hi:
                out[lo - start : hi - start] = frames[lo - first : hi - first]
        elif self._frames is not None and self._ticks is not None and end > start:
            ticks = np.arange(start, end, dtype=np.int64)
            slots = ticks % self.SLOTS
            heard = self._ticks[slots] == ticks
            out[heard] = self._frames[slots[heard]]
        return out.reshape(-1)

    def keep(self, start: int, end: int) -> None:
        """The call ended at `end`: keep what was heard from `start` on, and let the ring go."""
        if self._frames is None or self._kept is not None:
            return
        first = max(start, end - self.SLOTS)
        self._kept = (first, self.render(first, end).reshape(-1, FRAME_SAMPLES))
        self._frames = self._ticks = None


@dataclass(eq=False)
class _Ear:
    """A live party's ears (a SIP trunk's RTP, the console's softphone): `deliver` gets what the party hears,
    a 20 ms frame every tick (silence included), on the loop that attached it; `closed` when the call ends."""

    deliver: Callable[[Pcm], None]
    closed: Callable[[], None] | None = None


def _keys_pcm(tones: list[str]) -> Pcm:
    """Keys as in-band DTMF, each TONE_SECONDS long: 150 ms of tone, 50 ms of silence."""
    gap = np.zeros(int(0.05 * RATE), dtype=np.int16)
    parts: list[Pcm] = []
    for tone in tones:
        parts.extend([codecs.dtmf_tone(TONE_KEYS.get(tone, tone), 0.15, RATE), gap])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


@dataclass
class _Prompt:
    op_id: str
    frames: list[Pcm]
    targets: set[str] | None
    loop: bool
    position: int = 0

    def next(self) -> Pcm | None:
        if self.position >= len(self.frames):
            if not self.loop or not self.frames:
                return None
            self.position = 0
        frame = self.frames[self.position]
        self.position += 1
        return frame


@dataclass
class _Leg:
    raw_id: str
    joined_tick: int
    on_hold: bool = False
    muted: bool = False
    app: bool = False
    speech: collections.deque[Pcm] = field(default_factory=collections.deque)
    heard: _Ears = field(default_factory=lambda: _Ears())
    # A live party hears each tick's frame through this, silence included.
    ear: _Ear | None = None


@dataclass
class _Recording:
    recording_id: str
    server_call_id: str
    channel_type: str
    active: bool
    mixed: list[Pcm] = field(default_factory=list)
    # unmixed: a channel per party, in the order they joined (the app's audio is its own leg's channel)
    channels: dict[str, list[Pcm]] = field(default_factory=dict)
    length: int = 0  # frames recorded


class CallMedia:
    def __init__(self, server_call_id: str) -> None:
        self.server_call_id = server_call_id
        self.legs: dict[str, _Leg] = {}
        self.departed: dict[str, _Leg] = {}  # who left: what they heard is still fetchable
        self.prompts: list[_Prompt] = []
        self.app_audio: collections.deque[Pcm] = collections.deque()
        self.sinks: dict[str, FrameSink] = {}  # by a key of the owner's choosing
        self.recording: _Recording | None = None
        self.ended_tick: int | None = None

    @property
    def active(self) -> bool:
        return bool(
            self.prompts
            or self.app_audio
            or self.sinks
            or self.recording is not None
            or any(leg.speech or leg.ear is not None for leg in self.legs.values())
        )

    def tick(self, tick: int, to_ears: list[tuple[_Ear, Pcm]]) -> None:
        """Mix one tick; what live parties hear is added to `to_ears` (delivered on their own loop)."""
        spoken: dict[str, Pcm | None] = {}
        for raw_id, leg in self.legs.items():
            frame = leg.speech.popleft() if leg.speech else None
            # A muted or held party is not heard by the call.
            spoken[raw_id] = None if (leg.muted or leg.on_hold) else frame
        prompt_frames: list[tuple[_Prompt, Pcm]] = []
        for prompt in list(self.prompts):
            frame = prompt.next()
            if frame is None:
                self.prompts.remove(prompt)
            else:
                prompt_frames.append((prompt, frame))
        app = self.app_audio.popleft() if self.app_audio else None
        voices = [f for f in spoken.values() if f is not None]
        for raw_id, leg in self.legs.items():
            if leg.app:
                continue  # an app hears through its media stream, not here
            heard: list[Pcm] = []
            if not leg.on_hold:
                heard.extend(f for other, f in spoken.items() if other != raw_id and f is not None)
                if app is not None:
                    heard.append(app)
            heard.extend(f for p, f in prompt_frames if p.targets is None or raw_id in p.targets)
            mixed = mix(heard)
            if mixed is not None:
                leg.heard.write(tick, mixed)
            if leg.ear is not None:
                to_ears.append((leg.ear, SILENCE if mixed is None else mixed))
        parties_mix = mix(voices)
        for sink in list(self.sinks.values()):
            try:
                sink.on_frame(tick, parties_mix, spoken)
            except Exception:
                log.exception("a media sink failed; it is dropped")
                self.sinks = {k: v for k, v in self.sinks.items() if v is not sink}
        if self.recording is not None and self.recording.active:
            rec = self.recording
            everything = mix([*voices, *(f for _, f in prompt_frames), *([app] if app is not None else [])])
            rec.mixed.append(everything if everything is not None else SILENCE)
            if rec.channel_type == "unmixed":
                # A channel per participant; what the app plays or streams is its own leg's channel.
                app_leg = next((raw_id for raw_id, leg in self.legs.items() if leg.app), "__app__")
                app_mix = [*(f for _, f in prompt_frames), *([app] if app is not None else [])]
                for raw_id in [*spoken, app_leg]:
                    if raw_id not in rec.channels:
                        rec.channels[raw_id] = [SILENCE] * rec.length
                for raw_id, frames in rec.channels.items():
                    own = spoken.get(raw_id)
                    sound = mix([*([own] if own is not None else []), *(app_mix if raw_id == app_leg else [])])
                    frames.append(sound if sound is not None else SILENCE)
            rec.length += 1

    def heard_by(self, raw_id: str, now_tick: int) -> Pcm:
        leg = self.legs.get(raw_id) or self.departed.get(raw_id)
        if leg is None:
            return np.zeros(0, dtype=np.int16)
        return leg.heard.render(max(leg.joined_tick, now_tick - HEARD_SECONDS * 50), now_tick)


EventHandler = Callable[[MediaEvent], Awaitable[None]]

P = ParamSpec("P")
R = TypeVar("R")
SYNC_TIMEOUT_SECONDS = 10.0  # how long a caller waits for the plane's loop before giving up
STOP_GRACE_SECONDS = 2.0  # sockets get this long to close cleanly when the server stops


def _in_plane(method: Callable[Concatenate[MediaPlane, P], None]) -> Callable[Concatenate[MediaPlane, P], None]:
    """A command run on the plane's loop: from any other thread it is handed over in order, not waited for."""

    @functools.wraps(method)
    def command(self: MediaPlane, /, *args: P.args, **kwargs: P.kwargs) -> None:
        self._post(functools.partial(method, self, *args, **kwargs))

    return command


def _answered_in_plane(method: Callable[Concatenate[MediaPlane, P], R]) -> Callable[Concatenate[MediaPlane, P], R]:
    """A call run on the plane's loop whose caller waits for the answer (after the commands before it)."""

    @functools.wraps(method)
    def call(self: MediaPlane, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._wait_for(functools.partial(method, self, *args, **kwargs))

    return call


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # what the server's own loop runs on, when installed
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class MediaPlane:
    """The node's media plane (implements `platform.media_port.MediaPlanePort`).

    `own_thread=False` runs it on the loop that starts it (one loop, as before the thread; kept for
    measuring the two side by side)."""

    def __init__(self, data_dir: Path, *, prompts: PromptCache | None = None, own_thread: bool = True) -> None:
        self.prompts = prompts or PromptCache()
        self.metrics = MediaMetrics()
        self._calls: dict[str, CallMedia] = {}
        self._ended: collections.OrderedDict[str, CallMedia] = collections.OrderedDict()
        self._recordings_dir = data_dir / "recordings"
        self._recordings: dict[str, _Recording] = {}
        self._epoch = time.monotonic()
        self._wall_epoch = time.time() - (time.monotonic() - self._epoch)
        self._next_tick = 0  # the tick the loop runs next: behind the clock while the loop is late
        self._own_thread = own_thread
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the plane's loop, while it runs
        self._main: asyncio.AbstractEventLoop | None = None  # the server's loop: events and ears go there
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # used on the plane's loop only
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()  # on the server's loop
        self._event_task: asyncio.Task[None] | None = None
        self._handler: EventHandler | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # What opens a stream or a listener: wired in by the node (`media.streaming`, `media.listening`).
        self.stream_factory: Callable[[MediaPlane, CallMedia, StreamOptions], FrameSink] | None = None
        self.listener_factory: Callable[..., FrameSink] | None = None

    # ---- life ---------------------------------------------------------------------------------------

    def start(self, handler: EventHandler) -> None:
        self._handler = handler
        self._main = asyncio.get_running_loop()
        self._event_task = asyncio.create_task(self._dispatch(), name="media-events")
        if not self._own_thread:
            self._loop = self._main
            self._task = asyncio.create_task(self._run(), name="media-plane")
            return
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="media-plane", daemon=True)
        self._thread.start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        """The plane's thread: its loop runs the ticks and the sockets until `stop`."""
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._task = loop.create_task(self._run(), name="media-plane")
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shut(), loop))
                loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, STOP_GRACE_SECONDS * 5)
        elif loop is not None:
            await self._shut()
        self._loop = self._thread = None
        if self._event_task is not None:
            self._event_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._event_task

    async def _shut(self) -> None:
        """On the plane's loop: every call's media ends (sockets close, ears hear it), then the ticks stop."""
        for media in list(self._calls.values()):
            self._end(media)
        if self._task is not None:
            self._task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=STOP_GRACE_SECONDS)
        for task in (self._task, *self._background):
            if task is not None:
                task.cancel()
        for task in (self._task, *self._background):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _on_plane(self) -> bool:
        """Whether this thread may touch the plane's state now (its own thread, or no thread running)."""
        return self._thread is None or self._loop is None or threading.current_thread() is self._thread

    def _post(self, command: Callable[[], None]) -> None:
        loop = self._loop
        if self._on_plane() or loop is None:
            command()
            return
        with contextlib.suppress(RuntimeError):  # the plane has stopped: there is no audio left to command
            loop.call_soon_threadsafe(command)

    def _wait_for(self, call: Callable[[], R]) -> R:
        loop = self._loop
        if self._on_plane() or loop is None:
            return call()
        answer: concurrent.futures.Future[R] = concurrent.futures.Future()

        def run() -> None:
            try:
                answer.set_result(call())
            except BaseException as exc:
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            return call()  # the plane's loop has closed (the server is stopping): nothing else touches it now
        # The plane's loop never waits for the server's, so this returns within a tick's work.
        return answer.result(SYNC_TIMEOUT_SECONDS)

    def _to_main(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the server's loop (at once when the plane shares it)."""
        main = self._main
        if main is None or self._thread is None or threading.current_thread() is not self._thread:
            callback(*args)
            return
        with contextlib.suppress(RuntimeError):  # the server's loop has closed: nobody is listening
            main.call_soon_threadsafe(callback, *args)

    def now_tick(self) -> int:
        return int((time.monotonic() - self._epoch) / FRAME_SECONDS)

    def tick_time(self, tick: int) -> datetime:
        """When a tick's frame is due, in UTC: AudioData timestamps step by exactly 20 ms."""
        return datetime.fromtimestamp(self._wall_epoch + tick * FRAME_SECONDS, UTC)

    def emit(self, event: MediaEvent) -> None:
        """What the plane observed, for the call core (on the server's loop)."""
        self._to_main(self._events.put_nowait, event)

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A task of the plane's (a socket, a recognition), on the plane's loop."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def session(self, server_call_id: str) -> CallMedia:
        media = self._calls.get(server_call_id)
        if media is None:
            media = self._calls[server_call_id] = CallMedia(server_call_id)
        return media

    def wake(self) -> None:
        self._wake.set()

    # ---- MediaPlanePort -----------------------------------------------------------------------------

    @_in_plane
    def call_state(self, server_call_id: str, parties: list[Party] | None) -> None:
        if parties is None:
            media = self._calls.pop(server_call_id, None)
            if media is not None:
                self._end(media)
                media.ended_tick = self.now_tick()
                for ended in [*media.legs.values(), *media.departed.values()]:
                    ended.heard.keep(ended.joined_tick, media.ended_tick)
                self._ended[server_call_id] = media
                while len(self._ended) > ENDED_CALLS_KEPT:
                    self._ended.popitem(last=False)
            return
        media = self.session(server_call_id)
        tick = self.now_tick()
        present = {p.raw_id for p in parties}
        for gone in [raw_id for raw_id in media.legs if raw_id not in present]:
            left = media.departed[gone] = media.legs.pop(gone)
            left.heard.keep(left.joined_tick, tick)
        for party in parties:
            leg = media.legs.get(party.raw_id)
            if leg is None:
                leg = media.legs[party.raw_id] = _Leg(party.raw_id, tick)
            leg.on_hold, leg.muted, leg.app = party.on_hold, party.muted, party.app

    def play(
        self, server_call_id: str, op_id: str, prompt_keys: list[str], targets: list[str] | None, loop: bool
    ) -> None:
        # Cut into frames by the caller: the plane's loop only queues them.
        pcm = [self.prompts.get(key) for key in prompt_keys]
        frames = frames_of(np.concatenate(pcm)) if pcm else []
        self._play(server_call_id, _Prompt(op_id, frames, set(targets) if targets else None, loop))

    @_in_plane
    def _play(self, server_call_id: str, prompt: _Prompt) -> None:
        self.session(server_call_id).prompts.append(prompt)
        self.wake()

    @_in_plane
    def stop_play(self, server_call_id: str, op_id: str) -> None:
        media = self._calls.get(server_call_id)
        if media is not None:
            media.prompts = [p for p in media.prompts if p.op_id != op_id]

    @_in_plane
    def listen(
        self,
        server_call_id: str,
        op_id: str,
        target: str,
        *,
        phrases: list[str] | None,
        end_silence_seconds: float,
    ) -> None:
        if self.listener_factory is None:
            return
        media = self.session(server_call_id)
        media.sinks["listen:" + op_id] = self.listener_factory(
            self,
            media,
            op_id=op_id,
            target=target,
            phrases=phrases,
            end_silence_seconds=end_silence_seconds,
        )
        self.wake()

    @_in_plane
    def stop_listen(self, server_call_id: str, op_id: str) -> None:
        media = self._calls.get(server_call_id)
        if media is not None:
            sink = media.sinks.pop("listen:" + op_id, None)
            if sink is not None:
                sink.close()

    @_answered_in_plane
    def speak(self, server_call_id: str, raw_id: str, pcm: Pcm) -> float:
        """A simulated party says `pcm` (after what it is still saying); returns when it will have finished."""
        return self._speak(server_call_id, raw_id, pcm)

    def _speak(self, server_call_id: str, raw_id: str, pcm: Pcm) -> float:
        media = self.session(server_call_id)
        leg = media.legs.get(raw_id)
        if leg is None:
            leg = media.legs[raw_id] = _Leg(raw_id, self.now_tick())
        leg.speech.extend(frames_of(pcm))
        self.wake()
        return len(leg.speech) * FRAME_SECONDS

    @_answered_in_plane
    def in_call(self, server_call_id: str, raw_id: str) -> bool:
        """Whether `raw_id` is a party of the call's media now (it connected and has not left)."""
        media = self._calls.get(server_call_id)
        return media is not None and media.ended_tick is None and raw_id in media.legs

    def attach(
        self,
        server_call_id: str,
        raw_id: str,
        deliver: Callable[[Pcm], None],
        closed: Callable[[], None] | None = None,
    ) -> Callable[[], None]:
        """A live party (RTP over a SIP trunk, the console's softphone): `deliver` gets what `raw_id` hears,
        a 20 ms frame every tick, on the caller's loop, until the call ends (then `closed` is called there)
        or the returned function detaches it. Its voice goes in through `feed` (or `speak`)."""
        ear = _Ear(deliver, closed)
        self._attach(server_call_id, raw_id, ear)
        return functools.partial(self._detach, server_call_id, raw_id, ear)

    @_in_plane
    def _attach(self, server_call_id: str, raw_id: str, ear: _Ear) -> None:
        media = self.session(server_call_id)
        leg = media.legs.get(raw_id)
        if leg is None:
            leg = media.legs[raw_id] = _Leg(raw_id, self.now_tick())
        old, leg.ear = leg.ear, ear
        if old is not None and old.closed is not None:
            self._to_main(old.closed)
        self.wake()

    @_in_plane
    def _detach(self, server_call_id: str, raw_id: str, ear: _Ear) -> None:
        media = self._calls.get(server_call_id)
        for leg in (media.legs.get(raw_id), media.departed.get(raw_id)) if media is not None else ():
            if leg is not None and leg.ear is ear:
                leg.ear = None

    @_in_plane
    def feed(self, server_call_id: str, raw_id: str, frame: Pcm) -> None:
        """One 20 ms frame a live party said. Past a backlog of LIVE_BACKLOG_FRAMES (a peer sending faster
        than real time, or keys it pressed still sounding) frames are dropped: live audio stays live. The
        ticks the loop owes (it ran late and will catch up) are not the peer's backlog: they widen the cap."""
        media = self._calls.get(server_call_id)
        leg = media.legs.get(raw_id) if media is not None else None
        if leg is None:
            return
        owed = min(max(0, self.now_tick() - self._next_tick), MAX_CATCH_UP_TICKS)
        if len(leg.speech) >= LIVE_BACKLOG_FRAMES + owed:
            self.metrics.count("liveFramesDropped")
            return
        leg.speech.append(frame)

    @_in_plane
    def tones(self, server_call_id: str, raw_id: str, tones: list[str]) -> None:
        pcm = _keys_pcm(tones)
        if len(pcm):
            self._speak(server_call_id, raw_id, pcm)
        for sink in self.session(server_call_id).sinks.values():
            sink.on_tones(raw_id, tones)

    def send_tones(self, server_call_id: str, op_id: str, target: str, tones: list[str]) -> None:
        # The app's keys are a prompt to the target alone: the others do not hear them, media streams
        # (which carry the participants' keys) do not report them, recordings hold them.
        pcm = _keys_pcm(tones)
        if len(pcm):
            self._play(server_call_id, _Prompt(op_id, frames_of(pcm), {target}, loop=False))

    @_answered_in_plane
    def heard(self, server_call_id: str, raw_id: str) -> Pcm | None:
        media = self._calls.get(server_call_id) or self._ended.get(server_call_id)
        if media is None or (raw_id not in media.legs and raw_id not in media.departed):
            return None
        return media.heard_by(raw_id, media.ended_tick if media.ended_tick is not None else self.now_tick())

    @_in_plane
    def start_stream(self, options: StreamOptions) -> None:
        if self.stream_factory is None:
            return
        media = self.session(options.server_call_id)
        key = f"{options.kind}:{options.call_connection_id}"
        old = media.sinks.pop(key, None)
        if old is not None:
            old.close()
        media.sinks[key] = self.stream_factory(self, media, options)
        self.wake()

    @_in_plane
    def stop_stream(self, server_call_id: str, kind: str, call_connection_id: str) -> None:
        media = self._calls.get(server_call_id)
        if media is None:
            return
        sink = media.sinks.pop(f"{kind}:{call_connection_id}", None)
        if sink is not None:
            sink.close()

    @_in_plane
    def update_transcription(self, server_call_id: str, call_connection_id: str, locale: str) -> None:
        media = self._calls.get(server_call_id)
        sink = media.sinks.get(f"transcription:{call_connection_id}") if media else None
        if sink is not None and hasattr(sink, "locale"):
            sink.locale = locale

    def app_audio(self, media: CallMedia, pcm: Pcm) -> None:
        """Audio an app streamed into its call (bidirectional streaming): heard by every party. On the
        plane's loop (the stream's socket lives there)."""
        media.app_audio.extend(frames_of(pcm))
        self.wake()

    @_in_plane
    def start_recording(self, server_call_id: str, recording_id: str, channel_type: str, active: bool) -> None:
        media = self.session(server_call_id)
        rec = _Recording(recording_id, server_call_id, channel_type, active)
        media.recording = rec
        self._recordings[recording_id] = rec
        self.wake()

    @_in_plane
    def set_recording_active(self, recording_id: str, active: bool) -> None:
        rec = self._recordings.get(recording_id)
        if rec is not None:
            rec.active = active

    def stop_recording(self, recording_id: str, format_type: str, content_type: str, min_seconds: float) -> None:
        rec = self._take_recording(recording_id, min_seconds)
        if rec is None:
            return
        # Encoded and written by the caller: the plane's loop has let the recording go.
        if rec.channel_type == "unmixed" and rec.channels:
            channels = [_joined(frames) for frames in rec.channels.values()]
        else:
            channels = [_joined(rec.mixed)]
        data = codecs.encode(format_type, channels, RATE, video=content_type == "audioVideo")
        self._recordings_dir.mkdir(parents=True, exist_ok=True)
        path = self._recordings_dir / f"{recording_id}.{format_type}"
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(data)
        tmp.replace(path)

    @_answered_in_plane
    def _take_recording(self, recording_id: str, min_seconds: float) -> _Recording | None:
        rec = self._recordings.pop(recording_id, None)
        if rec is None:
            return None
        short = round(min_seconds / FRAME_SECONDS) - rec.length
        if short > 0:
            # The call's clock recorded longer than audio played (a virtual clock moved): silence fills it.
            rec.mixed.extend([SILENCE] * short)
            for frames in rec.channels.values():
                frames.extend([SILENCE] * short)
        media = self._calls.get(rec.server_call_id)
        if media is not None and media.recording is rec:
            media.recording = None
        return rec

    @_in_plane
    def clock_moved(self, seconds: float) -> None:
        """A virtual clock jumped ahead: recordings running then hear that time pass as silence, so what
        happened after the jump stays after it (a key pressed 2 s in is 2 s in, plus the real time the
        audio took). One jump adds an hour at most."""
        frames = min(round(seconds / FRAME_SECONDS), MAX_JUMP_FRAMES)
        for rec in self._recordings.values():
            if rec.active and frames > 0:
                rec.mixed.extend([SILENCE] * frames)
                for channel in rec.channels.values():
                    channel.extend([SILENCE] * frames)
                rec.length += frames

    def recording_file(self, recording_id: str) -> bytes | None:
        for path in self._recordings_dir.glob(f"{recording_id}.*"):
            if path.suffix != ".partial":
                return path.read_bytes()
        return None

    def delete_recording_file(self, recording_id: str) -> None:
        for path in self._recordings_dir.glob(f"{recording_id}.*"):
            path.unlink(missing_ok=True)

    # ---- internals ----------------------------------------------------------------------------------

    def _end(self, media: CallMedia) -> None:
        for sink in media.sinks.values():
            sink.close()
        media.sinks.clear()
        media.prompts.clear()
        media.app_audio.clear()
        for leg in [*media.legs.values(), *media.departed.values()]:
            ear, leg.ear = leg.ear, None
            if ear is not None and ear.closed is not None:
                self._to_main(ear.closed)

    def _hear(self, to_ears: list[tuple[_Ear, Pcm]]) -> None:
        """On the server's loop: a tick's frames to the live parties that attached there."""
        for ear, frame in to_ears:
            try:
                ear.deliver(frame)
            except Exception:
                log.exception("a live party's ear failed; it is detached")
                self._drop_ear(ear)

    @_in_plane
    def _drop_ear(self, ear: _Ear) -> None:
        for media in self._calls.values():
            for leg in media.legs.values():
                if leg.ear is ear:
                    leg.ear = None

    async def _run(self) -> None:
        next_tick = self.now_tick()
        while True:
            if not any(m.active for m in self._calls.values()):
                self._wake.clear()
                await self._wake.wait()
                next_tick = self._next_tick = self.now_tick()
            due = self._epoch + next_tick * FRAME_SECONDS
            delay = due - time.monotonic()
            # Late, the loop still yields once: what the live parties sent meanwhile is read (and counted
            # against the ticks owed) before the catch-up mixes it.
            await asyncio.sleep(max(0.0, delay))
            current = self.now_tick()
            if current - next_tick > MAX_CATCH_UP_TICKS:
                self.metrics.count("ticksSkipped", current - next_tick - MAX_CATCH_UP_TICKS)
                next_tick = current - MAX_CATCH_UP_TICKS
            late = max(0.0, time.monotonic() - due)
            self.metrics.lateness(late)
            if late > 0.05:
                self.metrics.count("ticksLateOver50ms")
            to_ears: list[tuple[_Ear, Pcm]] = []
            for media in list(self._calls.values()):
                if media.active:
                    media.tick(next_tick, to_ears)
            if to_ears:
                self._to_main(self._hear, to_ears)
            next_tick += 1
            self._next_tick = next_tick

    async def _dispatch(self) -> None:
        while True:
            event = await self._events.get()
            if self._handler is None:
                continue
            try:
                await self._handler(event)
            except Exception:
                log.exception("applying a media event failed: %r", event)


def _joined(frames: list[Pcm]) -> Pcm:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(frames)


__all__ = [
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "RATE",
    "CallMedia",
    "FrameSink",
    "MediaPlane",
    "frames_of",
    "mix",
]
