"""Listening for a recognize operation: what one participant says next, recognised once.

The listener follows the target's own voice (not what the call mixes for them), cuts the first
utterance by its end silence, and hands it to the recogniser on a worker thread; the call core hears
`SpeechStarted` (barge-in, the initial silence no longer runs) and `SpeechRecognized`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from callgrid.media import speech
from callgrid.media.codecs import Pcm
from callgrid.media.plane import SILENCE, FrameSink
from callgrid.platform.media_port import SpeechRecognized, SpeechStarted

if TYPE_CHECKING:
    from callgrid.media.plane import CallMedia, MediaPlane

log = logging.getLogger(__name__)


class SpeechListener(FrameSink):
    def __init__(
        self,
        plane: MediaPlane,
        media: CallMedia,
        *,
        op_id: str,
        target: str,
        phrases: list[str] | None,
        end_silence_seconds: float,
    ) -> None:
        self._plane = plane
        self._server_call_id = media.server_call_id
        self._op_id = op_id
        self._target = target
        self._phrases = phrases
        self._detector = speech.UtteranceDetector(end_silence=end_silence_seconds)
        self._done = False

    def on_frame(self, tick: int, mixed: Pcm | None, by_party: dict[str, Pcm | None]) -> None:
        if self._done:
            return
        frame = by_party.get(self._target)
        for event in self._detector.feed(frame if frame is not None else SILENCE):
            if isinstance(event, speech.SpeechStarted):
                self._plane.emit(SpeechStarted(self._server_call_id, self._op_id))
            elif isinstance(event, speech.UtteranceEnded):
                self._done = True
                self._plane.spawn(self._recognize(event.pcm), f"recognize-{self._op_id}")
                return

    async def _recognize(self, pcm: Pcm) -> None:
        try:
            recognizer = await speech.shared_recognizer_async()
            result = await recognizer.recognize_async(pcm, self._phrases)
        except Exception:
            # The operation must still end: reported as speech that could not be recognised.
            log.exception("speech recognition failed")
            self._plane.metrics.count("recognitionErrors")
            self._plane.emit(SpeechRecognized(self._server_call_id, self._op_id, text="", confidence=0.0))
            return
        self._plane.emit(
            SpeechRecognized(
                self._server_call_id,
                self._op_id,
                text=result.text,
                confidence=result.confidence,
                phrase=result.text if self._phrases and result.text else None,
            )
        )

    def close(self) -> None:
        self._done = True
