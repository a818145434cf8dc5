"""The JSON frames of ACS media streaming and real-time transcription over WebSocket, without I/O.

ACS opens a WebSocket to the app's `transportUrl` and sends text frames: first a metadata frame
(`AudioMetadata` or `TranscriptionMetadata`), then data frames (`AudioData`, `DtmfData`,
`TranscriptionData`). With bidirectional streaming the app sends `AudioData` and `StopAudio` frames back.
This module builds what callgrid (as ACS) sends and parses what an app sends, so the media plane can
stay transport-only and the frames can be tested against what Microsoft's SDKs and samples read.

Field names and casing follow what the SDK parsers read (.NET `StreamingData.Parse`, Java
`StreamingDataParser`, JS `StreamingData.parse`; all case-sensitive camelCase) and the payloads in the
ACS docs; the Python SDK 1.6 has no streaming parser, Python apps index the dicts directly. Wire quirks
handled here are marked "Quirk:".

Parsers raise `WireError` (a `ValueError`) on anything malformed, so the caller can count the frame and
drop it; the socket stays open, as with ACS.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias

# --- kinds and constants -------------------------------------------------------------------------------

KIND_AUDIO_METADATA: Final = "AudioMetadata"
KIND_AUDIO_DATA: Final = "AudioData"
KIND_DTMF_DATA: Final = "DtmfData"
KIND_TRANSCRIPTION_METADATA: Final = "TranscriptionMetadata"
KIND_TRANSCRIPTION_DATA: Final = "TranscriptionData"
KIND_STOP_AUDIO: Final = "StopAudio"

# ACS streams 16-bit little-endian mono PCM in 20 ms frames (50 frames a second).
PCM_ENCODING: Final = "PCM"
FRAME_MS: Final = 20
SAMPLE_WIDTH: Final = 2
# `mediaStreamingOptions.audioFormat` -> sample rate; the default (no audioFormat) is PCM 16 kHz mono.
AUDIO_FORMAT_RATES: Final[Mapping[str, int]] = {"pcm16kmono": 16000, "pcm24kmono": 24000}
DEFAULT_SAMPLE_RATE: Final = 16000

TEXT_FORMAT_DISPLAY: Final = "display"
RESULT_FINAL: Final = "Final"
RESULT_INTERMEDIATE: Final = "Intermediate"
ResultStatus: TypeAlias = Literal["Final", "Intermediate"]

# Transcription offsets and durations are in ticks of 100 ns (as the Speech service reports them).
TICKS_PER_SECOND: Final = 10_000_000

DTMF_CHARACTERS: Final = frozenset("0123456789*#ABCD")

# A frame from an app bigger than this is refused: 1 MiB of JSON is ~16 s of 24 kHz audio in one frame.
DEFAULT_MAX_FRAME_BYTES: Final = 1 << 20


class WireError(ValueError):
    """A frame that is not valid JSON, not the expected shape, or too big: count it and drop it."""


# --- small helpers -------------------------------------------------------------------------------------


def sample_rate_for(audio_format: str | None) -> int:
    """The sample rate of an `audioFormat` value ("pcm16KMono" / "pcm24KMono", any case); None is 16 kHz."""
    if audio_format is None:
        return DEFAULT_SAMPLE_RATE
    try:
        return AUDIO_FORMAT_RATES[audio_format.lower()]
    except KeyError:
        raise ValueError(f"unknown audioFormat {audio_format!r}; expected pcm16KMono or pcm24KMono") from None


def frame_bytes(sample_rate: int, channels: int = 1) -> int:
    """Bytes of one 20 ms PCM frame: 640 at 16 kHz, 960 at 24 kHz (the `length` of AudioMetadata)."""
    return sample_rate * FRAME_MS // 1000 * SAMPLE_WIDTH * channels


def chunk_pcm(pcm: bytes, size: int, *, pad: bool = True) -> Iterator[bytes]:
    """`pcm` cut into frames of `size` bytes; the last one padded with silence unless `pad` is False."""
    if size <= 0:
        raise ValueError("frame size must be positive")
    for start in range(0, len(pcm), size):
        chunk = pcm[start : start + size]
        if pad and len(chunk) < size:
            chunk += bytes(size - len(chunk))
        yield chunk


def pcm_is_silent(pcm: bytes, threshold: int = 0) -> bool:
    """True when no 16-bit sample of `pcm` exceeds `threshold` in magnitude (the frame's `silent` flag)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH])
    return all(-threshold <= s <= threshold for s in samples)


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and "Z", as ACS writes it ("2024-11-15T19:16:12.925Z").

    Quirk: Java's parser needs an offset (ISO_OFFSET_DATE_TIME), so a naive time is refused here.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with an offset (or "Z") back into an aware datetime."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise WireError(f"timestamp {text!r} is not ISO 8601") from None
    if ts.tzinfo is None:
        raise WireError(f"timestamp {text!r} has no offset")
    return ts


def seconds_to_ticks(seconds: float) -> int:
    """Seconds as 100-ns ticks, the unit of transcription `offset` and `duration`."""
    return round(seconds * TICKS_PER_SECOND)


def _dumps(obj: Mapping[str, Any]) -> str:
    # Compact, and no NaN/Infinity: they are not JSON and the SDKs' parsers reject them.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- frames ACS sends to the app -----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioMetadata:
    """The first frame of a media stream."""

    subscription_id: str
    sample_rate: int = DEFAULT_SAMPLE_RATE
    channels: int = 1
    encoding: str = PCM_ENCODING
    length: int | None = None  # bytes of one 20 ms frame; None: computed from the rate

    def to_dict(self) -> dict[str, Any]:
        if self.sample_rate <= 0 or self.channels <= 0:
            raise ValueError("sample_rate and channels must be positive")
        length = frame_bytes(self.sample_rate, self.channels) if self.length is None else self.length
        return {
            "kind": KIND_AUDIO_METADATA,
            "audioMetadata": {
                "subscriptionId": self.subscription_id,
                "encoding": self.encoding,
                "sampleRate": self.sample_rate,
                "channels": self.channels,
                "length": length,
            },
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class AudioData:
    """One frame of call audio (ACS -> app), or what an app plays into the call (see `parse_out_streaming_data`).

    `participant_raw_id` is the speaker for unmixed audio; None for mixed audio, and then the key is left out.
    Quirk: JS's parser guards only `undefined` before `createIdentifierFromRawId`, so `null` would throw there.
    """

    data: bytes
    timestamp: datetime
    participant_raw_id: str | None = None
    silent: bool = False

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"timestamp": format_timestamp(self.timestamp)}
        if self.participant_raw_id is not None:
            body["participantRawID"] = self.participant_raw_id
        body["data"] = base64.b64encode(self.data).decode("ascii")
        # Quirk: always present; Microsoft's Python voice sample reads a missing `silent` as silent and
        # drops the audio.
        body["silent"] = self.silent
        return {"kind": KIND_AUDIO_DATA, "audioData": body}

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class DtmfData:
    """A key pressed by a participant, sent on the media stream when `enableDtmfTones` is set.

    `data` is the key itself ("3", "#", "*"), not the tone name the callback events use ("three").
    The docs show only `data`; .NET and Java also read `timestamp` and `participantRawID`, sent when known.
    """

    data: str
    timestamp: datetime | None = None
    participant_raw_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if len(self.data) != 1 or self.data not in DTMF_CHARACTERS:
            raise ValueError(f"DTMF data must be one of 0-9 * # A-D, not {self.data!r}")
        body: dict[str, Any] = {"data": self.data}
        if self.timestamp is not None:
            body["timestamp"] = format_timestamp(self.timestamp)
        if self.participant_raw_id is not None:
            body["participantRawID"] = self.participant_raw_id
        return {"kind": KIND_DTMF_DATA, "dtmfData": body}

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class TranscriptionMetadata:
    """The first frame of a transcription stream.

    `speech_model_endpoint_id` is sent only when set, as `speechModelEndpointId` (the name in the payload
    the docs show; .NET and JS read `speechRecognitionModelEndpointId`, which no documented payload has).
    """

    subscription_id: str
    locale: str
    call_connection_id: str
    correlation_id: str
    speech_model_endpoint_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "subscriptionId": self.subscription_id,
            "locale": self.locale,
            "callConnectionId": self.call_connection_id,
            "correlationId": self.correlation_id,
        }
        if self.speech_model_endpoint_id is not None:
            body["speechModelEndpointId"] = self.speech_model_endpoint_id
        return {"kind": KIND_TRANSCRIPTION_METADATA, "transcriptionMetadata": body}

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class WordData:
    """One word of a phrase; offset and duration in 100-ns ticks."""

    text: str
    offset: int
    duration: int

    def to_dict(self) -> dict[str, Any]:
        _check_ticks(self.offset, "word offset")
        _check_ticks(self.duration, "word duration")
        return {"text": self.text, "offset": self.offset, "duration": self.duration}


@dataclass(frozen=True)
class TranscriptionData:
    """A recognised phrase: an intermediate hypothesis or the final result.

    `offset` is where the phrase starts in the transcribed audio and `duration` its length, both in
    100-ns ticks; `confidence` is 0.0..1.0. `participant_raw_id` is required: Microsoft's Python sample
    passes it to `identifier_from_raw_id` unguarded.
    """

    text: str
    confidence: float
    offset: int
    duration: int
    participant_raw_id: str
    result_status: ResultStatus = RESULT_FINAL
    words: Sequence[WordData] = field(default_factory=tuple)
    format: str = TEXT_FORMAT_DISPLAY

    def to_dict(self) -> dict[str, Any]:
        if not (math.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0):
            raise ValueError("confidence must be within 0.0..1.0")
        _check_ticks(self.offset, "offset")
        _check_ticks(self.duration, "duration")
        if self.result_status not in (RESULT_FINAL, RESULT_INTERMEDIATE):
            raise ValueError(f"result_status must be Final or Intermediate, not {self.result_status!r}")
        return {
            "kind": KIND_TRANSCRIPTION_DATA,
            "transcriptionData": {
                "text": self.text,
                "format": self.format,
                "confidence": self.confidence,
                "offset": self.offset,
                "duration": self.duration,
                # Quirk: always an array, possibly empty; JS maps over it and Python samples iterate it.
                "words": [w.to_dict() for w in self.words],
                "participantRawID": self.participant_raw_id,
                "resultStatus": self.result_status,
            },
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict())


def _check_ticks(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer of 100-ns ticks")


StreamingData: TypeAlias = AudioMetadata | AudioData | DtmfData | TranscriptionMetadata | TranscriptionData


# --- frames an app sends to ACS (bidirectional streaming) ----------------------------------------------


@dataclass(frozen=True)
class OutAudioData:
    """Audio the app wants played into the call (the SDKs' `OutStreamingData` of kind AudioData)."""

    data: bytes


@dataclass(frozen=True)
class OutStopAudio:
    """The app asks ACS to drop the audio it has queued and stop playing (barge-in)."""


OutStreamingData: TypeAlias = OutAudioData | OutStopAudio


def out_audio_data_frame(pcm: bytes) -> str:
    """An app's AudioData frame in the camelCase form the Java SDK writes (for simulated apps and tests)."""
    return _dumps({"kind": KIND_AUDIO_DATA, "audioData": {"data": base64.b64encode(pcm).decode("ascii")}})


def out_stop_audio_frame() -> str:
    """An app's StopAudio frame in the form the docs show."""
    return _dumps({"kind": KIND_STOP_AUDIO, "audioData": None, "stopAudio": {}})


def parse_out_streaming_data(
    frame: str | bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> OutStreamingData:
    """An app's frame as `OutAudioData` or `OutStopAudio`; `WireError` if it is neither.

    Quirk: the SDKs disagree on casing, so keys and the kind are matched case-insensitively, the kind
    alone decides, and other keys are ignored:
      .NET  {"Kind":"AudioData","AudioData":{"Data":..,"Timestamp":"0001-01-01T00:00:00+00:00",
             "Participant":null,"IsSilent":false,"Mark":null},"StopAudio":null}
      Java  {"kind":"AudioData","audioData":{"data":..,"timestamp":null,"participant":null,"isSilent":false},
             "stopAudio":null}
      JS    {"kind":"audioData","audioData":{"data":..,"isSilent":false},"stopAudio":{}}
            {"kind":"stopAudio","stopAudio":{}}
      docs  {"Kind":"StopAudio","AudioData":null,"StopAudio":{}}
    Base64 may carry whitespace (MIME line breaks), as .NET's decoder allows; an empty `data` is an
    empty chunk. Audio of any byte length is accepted (ACS buffers a byte stream); the caller aligns it.
    """
    obj = _load_object(frame, max_bytes)
    fields = _casefold_keys(obj)
    kind = fields.get("kind")
    if not isinstance(kind, str):
        raise WireError("frame has no string 'kind'")
    folded = kind.casefold()
    if folded == "stopaudio":
        return OutStopAudio()
    if folded != "audiodata":
        raise WireError(f"unsupported kind {kind!r} from the app (expected AudioData or StopAudio)")
    audio = fields.get("audiodata")
    if not isinstance(audio, dict):
        raise WireError("AudioData frame without an 'audioData' object")
    data = _casefold_keys(audio).get("data")
    if not isinstance(data, str):
        raise WireError("AudioData frame without a string 'audioData.data'")
    return OutAudioData(data=_b64decode(data, "audioData.data"))


def _load_object(frame: str | bytes | bytearray | memoryview, max_bytes: int) -> dict[str, Any]:
    if isinstance(frame, str):
        # Characters never outnumber UTF-8 bytes, so a long string is refused without encoding it.
        size = len(frame)
        if size <= max_bytes and not frame.isascii():
            size = len(frame.encode("utf-8", "surrogatepass"))
        text = frame
    elif isinstance(frame, bytes | bytearray | memoryview):
        raw = bytes(frame)
        size = len(raw)
        if size > max_bytes:  # before decoding: a huge frame costs nothing more to refuse
            raise WireError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"frame is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        raise WireError(f"frame must be text or bytes, not {type(frame).__name__}")
    if size > max_bytes:
        raise WireError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise WireError(f"frame is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WireError("frame is nested too deeply") from None
    if not isinstance(obj, dict):
        raise WireError(f"frame must be a JSON object, not {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> Any:
    raise WireError(f"frame contains {name}, which is not JSON")


def _casefold_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Later keys win over earlier ones that differ only in case, as a case-insensitive JSON reader does.
    return {key.casefold(): value for key, value in obj.items()}


_B64_WHITESPACE = str.maketrans("", "", " \t\r\n")


def _b64decode(text: str, what: str) -> bytes:
    compact = text.translate(_B64_WHITESPACE)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"{what} is not valid base64: {exc}") from None


# --- reading ACS's frames back (what an app's parser sees) ---------------------------------------------


def parse_streaming_data(
    frame: str | bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> StreamingData:
    """A frame ACS sends, read as the SDK parsers read it: exact camelCase, dispatch on `kind`.

    For tests and simulated apps. Stricter than the SDKs where callgrid must be: it refuses what some
    parser or sample chokes on (no `words`, no `silent`, a timestamp without offset, bad base64).
    """
    obj = _load_object(frame, max_bytes)
    kind = obj.get("kind")
    if kind == KIND_AUDIO_METADATA:
        body = _member(obj, "audioMetadata")
        return AudioMetadata(
            subscription_id=_str(body, "subscriptionId"),
            encoding=_str(body, "encoding"),
            sample_rate=_int(body, "sampleRate"),
            channels=_int(body, "channels"),
            length=_int(body, "length"),
        )
    if kind == KIND_AUDIO_DATA:
        body = _member(obj, "audioData")
        return AudioData(
            data=_b64decode(_str(body, "data"), "audioData.data"),
            timestamp=parse_timestamp(_str(body, "timestamp")),
            participant_raw_id=_opt_str(body, "participantRawID"),
            silent=_bool(body, "silent"),
        )
    if kind == KIND_DTMF_DATA:
        body = _member(obj, "dtmfData")
        ts = _opt_str(body, "timestamp")
        data = _str(body, "data")
        if len(data) != 1 or data not in DTMF_CHARACTERS:
            raise WireError(f"dtmfData.data {data!r} is not a DTMF key")
        return DtmfData(
            data=data,
            timestamp=None if ts is None else parse_timestamp(ts),
            participant_raw_id=_opt_str(body, "participantRawID"),
        )
    if kind == KIND_TRANSCRIPTION_METADATA:
        body = _member(obj, "transcriptionMetadata")
        return TranscriptionMetadata(
            subscription_id=_str(body, "subscriptionId"),
            locale=_str(body, "locale"),
            call_connection_id=_str(body, "callConnectionId"),
            correlation_id=_str(body, "correlationId"),
            speech_model_endpoint_id=_opt_str(body, "speechModelEndpointId"),
        )
    if kind == KIND_TRANSCRIPTION_DATA:
        body = _member(obj, "transcriptionData")
        words = body.get("words")
        if not isinstance(words, list):
            raise WireError("transcriptionData.words must be an array")
        status = _str(body, "resultStatus")
        if status not in (RESULT_FINAL, RESULT_INTERMEDIATE):
            raise WireError(f"transcriptionData.resultStatus {status!r} is not Final or Intermediate")
        confidence = body.get("confidence")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise WireError("transcriptionData.confidence must be a number")
        return TranscriptionData(
            text=_str(body, "text"),
            format=_str(body, "format"),
            confidence=float(confidence),
            offset=_int(body, "offset"),
            duration=_int(body, "duration"),
            words=tuple(_word(w) for w in words),
            participant_raw_id=_str(body, "participantRawID"),
            result_status=RESULT_FINAL if status == RESULT_FINAL else RESULT_INTERMEDIATE,
        )
    raise WireError(f"unknown kind {kind!r}")


def _member(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise WireError(f"frame has no {key!r} object")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise WireError(f"{key!r} must be a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise WireError(f"{key!r} must be a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{key!r} must be an integer")
    return value


def _bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise WireError(f"{key!r} must be true or false")
    return value


def _word(obj: Any) -> WordData:
    if not isinstance(obj, dict):
        raise WireError("each of transcriptionData.words must be an object")
    return WordData(text=_str(obj, "text"), offset=_int(obj, "offset"), duration=_int(obj, "duration"))
