"""Media streaming and live transcription: callgrid dials the app's WebSocket, as ACS does.

A media stream sends the `AudioMetadata` frame, then one `AudioData` frame per 20 ms tick (mixed: the
parties' voices; unmixed: one frame per party with its raw id), and with bidirectional streaming plays
the app's `AudioData` into the call (`StopAudio` drops what is queued). A transcription sends the
`TranscriptionMetadata` frame, then a `TranscriptionData` frame for each utterance a party says.

Drop policy: frames to an app that reads slower than real time wait in a bounded queue (10 s, behind the
socket's fixed send buffer of a few seconds); past it the oldest are dropped and counted
(`mediaStreamingFramesDropped`), so a slow consumer delays only its own stream. Frames from the app that
are malformed or oversized are dropped and counted (`mediaStreamingFramesRejected`); the socket stays open.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from callgrid.media import codecs, speech, wire
from callgrid.media.codecs import Pcm
from callgrid.media.plane import RATE, SILENCE, TONE_KEYS, FrameSink
from callgrid.platform.media_port import StreamFailed, StreamOptions, StreamStarted

if TYPE_CHECKING:
    import aiohttp

    from callgrid.media.plane import CallMedia, MediaPlane

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
QUEUE_FRAMES = 500  # 10 s of audio
# The kernel's send buffer for a stream socket, fixed rather than autotuned (up to 4 MiB, over a minute of
# audio): with it the drop policy starts after about 15 s of backlog, not after minutes.
SEND_BUFFER_BYTES = 128 * 1024


def open_stream(plane: MediaPlane, media: CallMedia, options: StreamOptions) -> FrameSink:
    """The media plane's `stream_factory`: a media stream or a transcription, by the options' kind."""
    if options.kind == "transcription":
        return TranscriptionStream(plane, media, options)
    return MediaStream(plane, media, options)


def _ssl_context() -> ssl.SSLContext:
    # As for webhooks: the app behind wss:// is a local one (a dev tunnel's stand-in, a proxy with a
    # certificate of its own), whose CA callgrid's process was not told about; Azure would refuse it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Socket(FrameSink):
    """A WebSocket to the app: connects, sends queued text frames in order, closes cleanly."""

    def __init__(self, plane: MediaPlane, media: CallMedia, options: StreamOptions) -> None:
        self._plane = plane
        self._media = media
        self.options = options
        self._out: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        plane.spawn(self._run(), f"{options.kind}-{options.call_connection_id}")

    def first_frame(self) -> str:
        raise NotImplementedError

    def send(self, frame: str) -> None:
        if self._closed:
            return
        self._out.append(frame)
        if len(self._out) > QUEUE_FRAMES:
            self._out.popleft()
            self._plane.metrics.count("mediaStreamingFramesDropped")
        self._ready.set()

    def received(self, data: str | bytes) -> None:
        """A frame from the app (only bidirectional media streams take any)."""
        self._plane.metrics.count("mediaStreamingFramesIgnored")

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def _run(self) -> None:
        import aiohttp  # on first use: importing it is a large share of the server's start

        o = self.options
        try:
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_SECONDS)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                use_tls = o.transport_url.lower().startswith("wss:")
                async with session.ws_connect(
                    o.transport_url,
                    ssl=_ssl_context() if use_tls else False,
                    heartbeat=30,
                    max_msg_size=wire.DEFAULT_MAX_FRAME_BYTES,
                ) as ws:
                    sock = ws.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
                    self._plane.emit(StreamStarted(o.server_call_id, o.kind, o.call_connection_id))
                    await ws.send_str(self.first_frame())
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        await self._write(ws)
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await reader
                    if not ws.closed:
                        await ws.close(code=aiohttp.WSCloseCode.OK, message=b"stream stopped")
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if not self._closed:
                self._closed = True
                self._plane.metrics.count(f"{o.kind}Failed")
                message = f"The WebSocket at {o.transport_url} could not be used: {type(exc).__name__}: {exc}"
                self._plane.emit(StreamFailed(o.server_call_id, o.kind, o.call_connection_id, False, message))

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            while self._out:
                await ws.send_str(self._out.popleft())
            if self._closed:
                return
            if ws.closed:
                raise ConnectionResetError("the app closed the WebSocket")
            self._ready.clear()
            await self._ready.wait()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import aiohttp

        async for message in ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.received(message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                break
        if not self._closed:
            # The app hung up on the stream: say so once and stop sending.
            self._closed = True
            self._ready.set()
            o = self.options
            self._plane.emit(
                StreamFailed(
                    o.server_call_id,
                    o.kind,
                    o.call_connection_id,
                    True,
                    f"The app closed the WebSocket at {o.transport_url}.",
                )
            )


class MediaStream(_Socket):
    def __init__(self, plane: MediaPlane, media: CallMedia, options: StreamOptions) -> None:
        self._rate = wire.sample_rate_for(options.audio_format)
        self._to_wire = codecs.StreamResampler(RATE, self._rate) if self._rate != RATE else None
        self._from_wire = codecs.StreamResampler(self._rate, RATE) if self._rate != RATE else None
        self._unmixed: dict[str, codecs.StreamResampler | None] = {}
        super().__init__(plane, media, options)

    def first_frame(self) -> str:
        return wire.AudioMetadata(self.options.subscription_id, sample_rate=self._rate).to_json()

    def on_frame(self, tick: int, mixed: Pcm | None, by_party: dict[str, Pcm | None]) -> None:
        if self._closed:
            return
        now = self._plane.tick_time(tick)
        if self.options.audio_channel_type == "unmixed":
            for raw_id, frame in by_party.items():
                if self._media.legs.get(raw_id) is not None and self._media.legs[raw_id].app:
                    continue  # the app does not hear itself
                resampler = self._unmixed.get(raw_id)
                if raw_id not in self._unmixed and self._rate != RATE:
                    resampler = self._unmixed[raw_id] = codecs.StreamResampler(RATE, self._rate)
                self._send_audio(frame, now, raw_id, resampler)
        else:
            self._send_audio(mixed, now, None, self._to_wire)

    def _send_audio(
        self, frame: Pcm | None, now: datetime, raw_id: str | None, resampler: codecs.StreamResampler | None
    ) -> None:
        pcm = frame if frame is not None else SILENCE
        if resampler is not None:
            out = resampler.feed(pcm)
            if not out:
                return
            pcm = np.concatenate(out)
        if raw_id is None and resampler is None:
            # The common frame (mixed, 16 kHz) by template: the same JSON as wire.AudioData, a third the cost.
            self.send(_mixed_frame(wire.format_timestamp(now), pcm, frame is None))
            return
        data = wire.AudioData(pcm.astype("<i2").tobytes(), now, participant_raw_id=raw_id, silent=frame is None)
        self.send(data.to_json())

    def on_tones(self, raw_id: str, tones: list[str]) -> None:
        if not self.options.extra.get("enableDtmfTones"):
            return
        now = datetime.now(UTC)
        for tone in tones:
            key = TONE_KEYS.get(tone)
            if key is not None:
                self.send(wire.DtmfData(key, now, participant_raw_id=raw_id).to_json())

    def received(self, data: str | bytes) -> None:
        if not self.options.bidirectional:
            self._plane.metrics.count("mediaStreamingFramesIgnored")
            return
        try:
            frame = wire.parse_out_streaming_data(data)
        except wire.WireError:
            self._plane.metrics.count("mediaStreamingFramesRejected")
            return
        if isinstance(frame, wire.OutStopAudio):
            self._media.app_audio.clear()
            return
        raw = frame.data[: len(frame.data) - len(frame.data) % 2]
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        if self._from_wire is not None:
            out = self._from_wire.feed(pcm)
            pcm = np.concatenate(out) if out else pcm[:0]
        self._plane.app_audio(self._media, pcm)


_SILENT_DATA = base64.b64encode(SILENCE.astype("<i2").tobytes()).decode("ascii")


def _mixed_frame(timestamp: str, pcm: Pcm, silent: bool) -> str:
    data = _SILENT_DATA if silent else base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")
    flag = "true" if silent else "false"
    return f'{{"kind":"AudioData","audioData":{{"timestamp":"{timestamp}","data":"{data}","silent":{flag}}}}}'


@dataclass
class _Talk:
    """One party's speech as a transcription follows it (for Intermediate results)."""

    ended: int = 0  # utterances of this party that have ended
    start: float = 0.0
    frames: list[Pcm] = field(default_factory=list)
    guessing: bool = False  # an Intermediate recognition is running


class TranscriptionStream(_Socket):
    """Each party's utterances, recognised as they end, sent as Final `TranscriptionData`; with
    `enableIntermediateResults`, what has been said so far every second of speech, as Intermediate."""

    def __init__(self, plane: MediaPlane, media: CallMedia, options: StreamOptions) -> None:
        self.locale = options.locale
        self._detectors: dict[str, speech.UtteranceDetector] = {}
        self._talks: dict[str, _Talk] = {}
        self._frames = 0  # ticks since the transcription started: offsets count from here
        super().__init__(plane, media, options)

    def first_frame(self) -> str:
        o = self.options
        return wire.TranscriptionMetadata(
            subscription_id=o.subscription_id,
            locale=self.locale,
            call_connection_id=o.call_connection_id,
            correlation_id=o.correlation_id,
            speech_model_endpoint_id=o.extra.get("speechModelEndpointId"),
        ).to_json()

    def on_frame(self, tick: int, mixed: Pcm | None, by_party: dict[str, Pcm | None]) -> None:
        if self._closed:
            return
        self._frames += 1
        for raw_id, frame in by_party.items():
            detector = self._detectors.get(raw_id)
            if detector is None:
                detector = self._detectors[raw_id] = speech.UtteranceDetector()
                self._talks[raw_id] = _Talk()
                # A party who joins later is offset from when the transcription started, not from joining.
                detector.feed(np.zeros((self._frames - 1) * len(SILENCE), dtype=np.int16))
            talk = self._talks[raw_id]
            audio = frame if frame is not None else SILENCE
            for event in detector.feed(audio):
                if isinstance(event, speech.SpeechStarted):
                    talk.start, talk.frames = event.start, []
                elif isinstance(event, speech.UtteranceEnded):
                    talk.ended += 1
                    talk.frames = []
                    final = self._transcribe(raw_id, event.pcm, event.start, wire.RESULT_FINAL, talk.ended)
                    self._plane.spawn(final, "transcribe")
            if self.options.intermediate_results and detector.in_speech:
                talk.frames.append(audio)
                if len(talk.frames) % 50 == 0 and not talk.guessing:
                    talk.guessing = True
                    pcm = np.concatenate(talk.frames)
                    guess = self._transcribe(raw_id, pcm, talk.start, wire.RESULT_INTERMEDIATE, talk.ended)
                    self._plane.spawn(guess, "transcribe-intermediate")

    async def _transcribe(self, raw_id: str, pcm: Pcm, start: float, status: wire.ResultStatus, ended: int) -> None:
        talk = self._talks[raw_id]
        try:
            recognizer = await speech.shared_recognizer_async()
            result = await recognizer.recognize_async(pcm, None)
        except Exception:
            log.exception("transcription of an utterance failed")
            self._plane.metrics.count("recognitionErrors")
            return
        finally:
            if status == wire.RESULT_INTERMEDIATE:
                talk.guessing = False
        if not result.text.strip() or self._closed:
            return
        if status == wire.RESULT_INTERMEDIATE and talk.ended != ended:
            return  # the utterance ended meanwhile: its Final says it all
        words = [
            wire.WordData(
                text=w,
                offset=wire.seconds_to_ticks(start + begin),
                duration=wire.seconds_to_ticks(max(0.0, end - begin)),
            )
            for w, begin, end in result.words
        ]
        # A Final result is display text, as Microsoft's transcription how-to shows it ("format": "display",
        # "text": "Testing transcription.", its words in lower case); hypotheses stay as heard.
        text = speech.display_text(result.text) if status == wire.RESULT_FINAL else result.text
        data = wire.TranscriptionData(
            text=text,
            confidence=min(1.0, max(0.0, result.confidence)),
            offset=wire.seconds_to_ticks(start),
            duration=wire.seconds_to_ticks(len(pcm) / RATE),
            participant_raw_id=raw_id,
            result_status=status,
            words=words,
        )
        self.send(data.to_json())
