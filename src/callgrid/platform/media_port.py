"""What the call core asks of the media plane, and what the media plane tells it back.

The call core keeps state in the store and decides; the media plane (`callgrid.media`) carries audio in
memory. They meet here and nowhere else: commands go out after the transaction that decided them has
committed (`StoreTx.after_commit`), and what the plane observed comes back as the events below, which
the node applies in a transaction of their own. Audio is not durable: after a restart a connected call
carries silence until someone speaks or plays again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Party:
    """A participant as the mixer sees them."""

    raw_id: str
    on_hold: bool = False
    muted: bool = False
    app: bool = False  # an app's own leg (answered or created through Call Automation): its audio is the app's


@dataclass(frozen=True)
class StreamOptions:
    """mediaStreamingOptions or transcriptionOptions, as the app asked for them."""

    kind: str  # "mediaStreaming" | "transcription"
    transport_url: str
    subscription_id: str
    call_connection_id: str
    server_call_id: str
    correlation_id: str
    content_type: str = "audio"
    audio_channel_type: str = "mixed"  # mixed | unmixed
    audio_format: str = "Pcm16KMono"  # Pcm16KMono | Pcm24KMono
    bidirectional: bool = False
    locale: str = "en-US"
    intermediate_results: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class MediaPlanePort(Protocol):
    def call_state(self, server_call_id: str, parties: list[Party] | None) -> None:
        """Who is in a connected call now; None when it has ended (its sockets close)."""

    def play(
        self, server_call_id: str, op_id: str, prompt_keys: list[str], targets: list[str] | None, loop: bool
    ) -> None: ...

    def stop_play(self, server_call_id: str, op_id: str) -> None: ...

    def listen(
        self,
        server_call_id: str,
        op_id: str,
        target: str,
        *,
        phrases: list[str] | None,
        end_silence_seconds: float,
    ) -> None:
        """Recognise what `target` says next (against `phrases` when given): report SpeechStarted when it
        begins (barge-in), then SpeechRecognized."""

    def stop_listen(self, server_call_id: str, op_id: str) -> None: ...

    def tones(self, server_call_id: str, raw_id: str, tones: list[str]) -> None:
        """A party pressed keys: heard in-band by the others and in recordings."""

    def send_tones(self, server_call_id: str, op_id: str, target: str, tones: list[str]) -> None:
        """The app sends keys to one party (send DTMF): heard in-band by that party and in recordings."""

    def start_stream(self, options: StreamOptions) -> None: ...

    def stop_stream(self, server_call_id: str, kind: str, call_connection_id: str) -> None: ...

    def update_transcription(self, server_call_id: str, call_connection_id: str, locale: str) -> None: ...

    def start_recording(self, server_call_id: str, recording_id: str, channel_type: str, active: bool) -> None: ...

    def set_recording_active(self, recording_id: str, active: bool) -> None: ...

    def stop_recording(self, recording_id: str, format_type: str, content_type: str, min_seconds: float) -> None:
        """Stop capturing and write the file (before the event announcing it can be delivered), at least
        `min_seconds` long: the recorded time on the call's clock, which a virtual clock may move faster
        than audio plays."""

    def recording_file(self, recording_id: str) -> bytes | None: ...

    def delete_recording_file(self, recording_id: str) -> None: ...


# ---- what the plane observed ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    server_call_id: str
    op_id: str


@dataclass(frozen=True)
class SpeechRecognized:
    server_call_id: str
    op_id: str
    text: str
    confidence: float
    phrase: str | None = None  # the phrase of `listen(phrases=...)` that was heard


@dataclass(frozen=True)
class StreamStarted:
    server_call_id: str
    kind: str
    call_connection_id: str


@dataclass(frozen=True)
class StreamFailed:
    server_call_id: str
    kind: str
    call_connection_id: str
    connected: bool  # False: the app's WebSocket could not be opened; True: it was, and then broke
    message: str


MediaEvent = SpeechStarted | SpeechRecognized | StreamStarted | StreamFailed
