"""Media operations of a call: play, recognition (keys and speech), continuous DTMF, sending tones.

Media operations queue per call; the head one runs. Play sources are fetched (or synthesised) and
measured before the transaction (`media/prompts.py`); here they complete after their real duration on
the clock, while the media plane plays their audio. Keys pressed by simulated callers arrive through
`caller_tones`; what a caller says is heard by the media plane, which reports it back as
`SpeechStarted` / `SpeechRecognized` (`on_media_event`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from callgrid.errors import InvalidRequest, NotFound
from callgrid.identifiers import CommunicationIdentifier
from callgrid.platform.audio import DTMF_TONES, TONE_SECONDS, Probe
from callgrid.platform.calls.models import Call, CallConnection, CallState, ConnectionState
from callgrid.platform.calls.results import SUCCESS, Result
from callgrid.platform.media_port import MediaEvent, SpeechRecognized, SpeechStarted
from callgrid.store import StoreTx, TimerRow

if TYPE_CHECKING:
    from callgrid.platform.calls.service import CallService

# Defaults of the service when the request leaves them out.
INITIAL_SILENCE_SECONDS = 5
INTER_TONE_SECONDS = 2
MAX_TONES = 1

CANCELED: Result = (400, 8508, "Action failed, the operation was canceled.")
STOP_TONE: Result = (200, 8514, "Action completed, stop tone detected.")
MAX_DIGITS: Result = (200, 8531, "Action completed, max digits received.")
INTER_TONE_TIMEOUT: Result = (200, 8532, "Action completed, inter-digit silence timeout reached.")
INITIAL_SILENCE: Result = (400, 8510, "Action failed, initial silence timeout reached.")
CHOICE_MATCHED: Result = (200, 8533, "Action completed, DTMF option matched.")
INCORRECT_TONE: Result = (500, 8534, "Action failed, incorrect tone entered.")  # 500: as ACS documents it
SPEECH_OPTION_MATCHED: Result = (200, 8545, "Action completed, speech option matched.")
SPEECH_RECOGNIZED: Result = (200, 8569, "Action completed, speech was recognized.")
SPEECH_OPTION_NOT_MATCHED: Result = (400, 8547, "Action failed, recognized phrase does not match a valid option.")
SPEECH_NOT_RECOGNIZED: Result = (400, 8563, "Action failed, speech could not be recognized.")
# What the speech recogniser waits for after the caller stops talking (ACS's default endSilenceTimeout).
END_SILENCE_SECONDS = 0.5
# Once the caller is talking, the initial silence timeout no longer applies; this bounds an utterance.
MAX_SPEECH_SECONDS = 60.0
# api-versions whose ContinuousDtmfRecognitionToneReceived nests the key as `toneInfo: {sequenceId, tone}`
# (the contract of azure-communication-callautomation 1.1.0b1's models); 2023-10-15 flattened it.
NESTED_TONE_INFO_VERSIONS = frozenset({"2023-06-15-preview"})


@dataclass
class RecognizeOptions:
    input_type: str
    target: CommunicationIdentifier
    prompts: list[Probe] = field(default_factory=list)
    interrupt_prompt: bool = False
    initial_silence_seconds: float = INITIAL_SILENCE_SECONDS
    inter_tone_seconds: float = INTER_TONE_SECONDS
    max_tones: int = MAX_TONES
    stop_tones: list[str] = field(default_factory=list)
    # recognizeInputType "choices": each {"label", "phrases"?, "tone"?}.
    choices: list[dict[str, Any]] = field(default_factory=list)
    end_silence_seconds: float = END_SILENCE_SECONDS


class MediaService:
    def __init__(self, core: CallService) -> None:
        self._core = core
        core.timers.register("media.step", self._on_step)

    # ---- operations of an app -------------------------------------------------------------------

    async def play(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        sources: list[Probe],
        play_to: list[CommunicationIdentifier],
        loop: bool = False,
        interrupt: bool = False,
        operation_context: str | None = None,
        callback_uri: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        if not sources:
            raise InvalidRequest("playSources must name at least one source.", code="8523")
        for target in play_to:
            if call.participant(target.raw_id) is None:
                raise NotFound(f"playTo: '{target.raw_id}' is not in the call.", code="8522")
        op = self._new_op(call, connection, "play", operation_context, callback_uri)
        op.update(sources=[s.to_doc() for s in sources], loop=loop, playTo=[t.raw_id for t in play_to])
        await self._enqueue(tx, call, op, interrupt)
        await self._core.save(tx, call)

    async def recognize(
        self,
        tx: StoreTx,
        call_connection_id: str,
        options: RecognizeOptions,
        *,
        interrupt: bool = False,
        operation_context: str | None = None,
        callback_uri: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        if call.participant(options.target.raw_id) is None:
            raise NotFound(f"targetParticipant '{options.target.raw_id}' is not in the call.", code="8522")
        for tone in options.stop_tones:
            if tone not in DTMF_TONES:
                raise InvalidRequest(f"stopTones: '{tone}' is not a DTMF tone name.", code="8523")
        if not 1 <= options.max_tones <= 128:
            raise InvalidRequest("maxTonesToCollect must be between 1 and 128.", code="8523")
        _check_choices(options)
        op = self._new_op(call, connection, "recognize", operation_context, callback_uri)
        op.update(
            inputType=options.input_type,
            target=options.target.raw_id,
            sources=[p.to_doc() for p in options.prompts],
            interruptPrompt=options.interrupt_prompt,
            initialSilence=options.initial_silence_seconds,
            interTone=options.inter_tone_seconds,
            maxTones=options.max_tones,
            stopTones=list(options.stop_tones),
            choices=list(options.choices),
            endSilence=options.end_silence_seconds,
            tones=[],
        )
        await self._enqueue(tx, call, op, interrupt)
        await self._core.save(tx, call)

    async def cancel_all(self, tx: StoreTx, call_connection_id: str) -> None:
        call, _ = await self._core.active_connection(tx, call_connection_id)
        for op in list(self._ops(call)):
            await self._finish(tx, call, op, "Canceled", CANCELED, start_next=False)
        await self._core.save(tx, call)

    async def start_continuous_dtmf(
        self,
        tx: StoreTx,
        call_connection_id: str,
        target: CommunicationIdentifier,
        *,
        operation_context: str | None = None,
        callback_uri: str | None = None,
        api_version: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        self._require_participant(call, target)
        listeners = call.media.setdefault("continuous", {})
        listeners[target.raw_id] = {
            "connection": connection.call_connection_id,
            "sequence": 0,
            "operationContext": operation_context,
            "callbackUri": callback_uri,
            "apiVersion": api_version,
        }
        await self._core.save(tx, call)

    async def stop_continuous_dtmf(
        self,
        tx: StoreTx,
        call_connection_id: str,
        target: CommunicationIdentifier,
        *,
        operation_context: str | None = None,
        callback_uri: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        self._require_participant(call, target)
        listener = call.media.get("continuous", {}).pop(target.raw_id, None)
        if listener is None:
            raise InvalidRequest(f"Continuous DTMF recognition is not running for '{target.raw_id}'.", code="8583")
        await self._core.callback(
            tx,
            call,
            connection,
            "ContinuousDtmfRecognitionStopped",
            operation_context=operation_context,
            result=SUCCESS,
            url=callback_uri or listener.get("callbackUri"),
        )
        await self._core.save(tx, call)

    async def send_dtmf_tones(
        self,
        tx: StoreTx,
        call_connection_id: str,
        tones: list[str],
        target: CommunicationIdentifier,
        *,
        operation_context: str | None = None,
        callback_uri: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        self._require_participant(call, target)
        if not tones or len(tones) > 18:
            raise InvalidRequest("tones must name between 1 and 18 DTMF tones.", code="8523")
        for tone in tones:
            if tone not in DTMF_TONES:
                raise InvalidRequest(f"tones: '{tone}' is not a DTMF tone name.", code="8523")
        now = self._core.clock.now()
        self._remember_tones(call, connection.answered_for, tones, now)
        op = self._new_op(call, connection, "sendDtmf", operation_context, callback_uri)
        op.update(phase="sending", tones=tones, target=target.raw_id, dueAt=now + TONE_SECONDS * len(tones))
        call.media.setdefault("sends", []).append(op)
        await self._schedule(tx, call, op)
        call.record(now, "dtmfSent", tones=tones, to=target.raw_id)
        # ACS plays the keys to the target in-band (an IVR on the far end hears them).
        plane, server_call_id, op_id = self._core.media_plane, call.server_call_id, op["id"]
        tx.after_commit(lambda: plane.send_tones(server_call_id, op_id, target.raw_id, list(tones)))
        await self._core.save(tx, call)

    # ---- the simulated caller presses keys ----------------------------------------------------------

    async def caller_tones(self, tx: StoreTx, server_call_id: str, raw_id: str, tones: list[str]) -> Call:
        core = self._core
        call = await core.get_call(tx, server_call_id)
        if call.state != CallState.CONNECTED:
            raise InvalidRequest("Tones can be sent only in a connected call.", code="8501")
        if call.participant(raw_id) is None:
            raise NotFound(f"'{raw_id}' is not in the call.", code="8522")
        for tone in tones:
            if tone not in DTMF_TONES:
                raise InvalidRequest(
                    f"'{tone}' is not a DTMF tone name ({', '.join(sorted(DTMF_TONES))}).", code="8523"
                )
        now = core.clock.now()
        self._remember_tones(call, raw_id, tones, now)
        call.record(now, "dtmfReceived", participant=raw_id, tones=tones)
        # Heard in-band too: by the other parties, streams and recordings.
        plane, server_call_id = core.media_plane, call.server_call_id
        tx.after_commit(lambda: plane.tones(server_call_id, raw_id, list(tones)))
        for tone in tones:
            await self._continuous_tone(tx, call, raw_id, tone)
            await self._recognize_tone(tx, call, raw_id, tone)
        await core.save(tx, call)
        return call

    # ---- what the media plane heard -------------------------------------------------------------------

    async def on_media_event(self, tx: StoreTx, event: MediaEvent) -> None:
        """Apply what the media plane observed, if the operation it concerns is still waiting for it."""
        if not isinstance(event, SpeechStarted | SpeechRecognized):
            return
        call = await self._core.get_call(tx, event.server_call_id)
        if call.state != CallState.CONNECTED:
            return
        ops = self._ops(call)
        op = ops[0] if ops and ops[0]["id"] == event.op_id else None
        if op is None or op["kind"] != "recognize":
            return
        now = self._core.clock.now()
        if isinstance(event, SpeechStarted):
            if op["phase"] == "prompt" and op["interruptPrompt"]:
                self._stop_prompt(tx, call, op)  # barge-in
                op["phase"] = "listening"
            if op["phase"] != "listening" or op.get("speaking"):
                return
            # The caller is talking: the initial silence no longer runs; the utterance's end decides.
            op["speaking"] = True
            op["dueAt"] = now + MAX_SPEECH_SECONDS
            await self._schedule(tx, call, op)
            await self._core.save(tx, call)
            return
        if op["phase"] == "prompt" and not op["interruptPrompt"]:
            return  # speech over a prompt that may not be interrupted is not heard
        text = event.text.strip()
        if op["inputType"] == "choices":
            choice = _choice_of(op, event.phrase, text)
            if choice is None:
                await self._finish(tx, call, op, "Failed", SPEECH_OPTION_NOT_MATCHED)
            else:
                result = {
                    "label": choice["label"],
                    "recognizedPhrase": event.phrase or text,
                    "confidence": round(event.confidence, 4),
                }
                extra = {"recognitionType": "choices", "choiceResult": result}
                await self._finish(tx, call, op, "Completed", SPEECH_OPTION_MATCHED, extra=extra)
        elif not text:
            await self._finish(tx, call, op, "Failed", SPEECH_NOT_RECOGNIZED)
        else:
            extra = {"recognitionType": "speech", "speechResult": {"speech": text, "confidence": event.confidence}}
            await self._finish(tx, call, op, "Completed", SPEECH_RECOGNIZED, extra=extra)
        await self._core.save(tx, call)

    # ---- internals ----------------------------------------------------------------------------------

    def _stop_prompt(self, tx: StoreTx, call: Call, op: dict[str, Any]) -> None:
        plane, server_call_id, op_id = self._core.media_plane, call.server_call_id, op["id"]
        tx.after_commit(lambda: plane.stop_play(server_call_id, op_id))

    def _ops(self, call: Call) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = call.media.setdefault("ops", [])
        return ops

    def _new_op(
        self, call: Call, connection: CallConnection, kind: str, context: str | None, callback_uri: str | None
    ) -> dict[str, Any]:
        if callback_uri is not None and not callback_uri.lower().startswith(("http://", "https://")):
            raise InvalidRequest("operationCallbackUri must be an absolute http(s) URI.", code="8523")
        return {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "connection": connection.call_connection_id,
            "operationContext": context,
            "callbackUri": callback_uri,
            "phase": "queued",
            "token": 0,
        }

    def _require_participant(self, call: Call, target: CommunicationIdentifier) -> None:
        if call.participant(target.raw_id) is None:
            raise NotFound(f"targetParticipant '{target.raw_id}' is not in the call.", code="8522")

    def _remember_tones(self, call: Call, raw_id: str, tones: list[str], now: float) -> None:
        # Recordings render these as audible DTMF at the time they were pressed.
        log = call.media.setdefault("toneLog", [])
        for i, tone in enumerate(tones):
            log.append([now + i * TONE_SECONDS, raw_id, tone])

    async def _enqueue(self, tx: StoreTx, call: Call, op: dict[str, Any], interrupt: bool) -> None:
        ops = self._ops(call)
        if interrupt and ops:
            await self._finish(tx, call, ops[0], "Canceled", CANCELED, start_next=False)
            ops.insert(0, op)
        else:
            ops.append(op)
        if ops[0] is op:
            await self._start(tx, call, op)

    async def _start(self, tx: StoreTx, call: Call, op: dict[str, Any]) -> None:
        now = self._core.clock.now()
        failed = next((i for i, s in enumerate(op["sources"]) if s["duration"] is None), None)
        if failed is not None:
            source = op["sources"][failed]
            result = (400, int(source["subCode"]), str(source["message"]))
            await self._finish(tx, call, op, "Failed", result, extra={"failedPlaySourceIndex": failed})
            return
        total = sum(float(s["duration"]) for s in op["sources"])
        keys = [str(s["key"]) for s in op["sources"] if s.get("key")]
        plane, server_call_id, op_id = self._core.media_plane, call.server_call_id, op["id"]
        if op["kind"] == "play":
            op["phase"] = "playing"
            op["dueAt"] = now + total
            targets = op["playTo"] or None
            loop = bool(op["loop"])
            tx.after_commit(lambda: plane.play(server_call_id, op_id, keys, targets, loop))
            await self._event(tx, call, op, "PlayStarted", SUCCESS)
        elif total > 0:
            op["phase"] = "prompt"
            op["dueAt"] = now + total
            # A recognize prompt is played to the participant whose answer is awaited.
            target = [op["target"]]
            tx.after_commit(lambda: plane.play(server_call_id, op_id, keys, target, False))
            if op["interruptPrompt"]:
                self._hear_speech(tx, call, op)
        else:
            self._listen(tx, call, op, now, op["initialSilence"])
        call.record(now, "mediaStarted", kind=op["kind"], operationId=op["id"])
        await self._schedule(tx, call, op)

    def _listen(self, tx: StoreTx, call: Call, op: dict[str, Any], now: float, wait: float) -> None:
        op["phase"] = "listening"
        op["dueAt"] = now + wait
        if not op.get("hearing"):
            self._hear_speech(tx, call, op)

    def _hear_speech(self, tx: StoreTx, call: Call, op: dict[str, Any]) -> None:
        """Ask the media plane to recognise what the target says, for input types that take speech."""
        phrases = _speech_phrases(op)
        if op["kind"] != "recognize" or op["inputType"] == "dtmf" or phrases == []:
            return
        op["hearing"] = True
        plane, server_call_id, op_id = self._core.media_plane, call.server_call_id, op["id"]
        target, end_silence = op["target"], float(op.get("endSilence", END_SILENCE_SECONDS))
        tx.after_commit(
            lambda: plane.listen(
                server_call_id,
                op_id,
                target,
                phrases=phrases,
                end_silence_seconds=end_silence,
            )
        )

    async def _schedule(self, tx: StoreTx, call: Call, op: dict[str, Any]) -> None:
        op["token"] += 1
        await self._core.timers.schedule(
            tx,
            "media.step",
            op["dueAt"],
            {"serverCallId": call.server_call_id, "opId": op["id"], "token": op["token"]},
        )

    async def _finish(
        self,
        tx: StoreTx,
        call: Call,
        op: dict[str, Any],
        outcome: str,
        result: Result,
        *,
        extra: dict[str, Any] | None = None,
        start_next: bool = True,
    ) -> None:
        ops = self._ops(call)
        was_head = bool(ops) and ops[0] is op
        if op in ops:
            ops.remove(op)
        plane, server_call_id, op_id = self._core.media_plane, call.server_call_id, op["id"]

        def silence_it() -> None:
            plane.stop_play(server_call_id, op_id)
            plane.stop_listen(server_call_id, op_id)

        tx.after_commit(silence_it)
        name = {"play": "Play", "recognize": "Recognize"}[op["kind"]] + outcome
        await self._event(tx, call, op, name, result, extra)
        call.record(self._core.clock.now(), "mediaEnded", kind=op["kind"], outcome=outcome, operationId=op["id"])
        if start_next and was_head and ops:
            await self._start(tx, call, ops[0])

    async def _event(
        self,
        tx: StoreTx,
        call: Call,
        op: dict[str, Any],
        name: str,
        result: Result,
        extra: dict[str, Any] | None = None,
    ) -> None:
        connection = call.connection(op["connection"])
        if connection is None or connection.state != ConnectionState.CONNECTED:
            return
        await self._core.callback(
            tx,
            call,
            connection,
            name,
            operation_context=op["operationContext"],
            result=result,
            extra=extra,
            url=op["callbackUri"],
        )

    async def _continuous_tone(self, tx: StoreTx, call: Call, raw_id: str, tone: str) -> None:
        listener = call.media.get("continuous", {}).get(raw_id)
        if listener is None:
            return
        connection = call.connection(listener["connection"])
        if connection is None or connection.state != ConnectionState.CONNECTED:
            return
        listener["sequence"] += 1
        key: dict[str, Any] = {"sequenceId": listener["sequence"], "tone": tone}
        api_version = listener.get("apiVersion")
        extra = {"toneInfo": key} if api_version in NESTED_TONE_INFO_VERSIONS else dict(key)
        if api_version:
            extra["version"] = api_version
        await self._core.callback(
            tx,
            call,
            connection,
            "ContinuousDtmfRecognitionToneReceived",
            operation_context=listener["operationContext"],
            result=SUCCESS,
            extra=extra,
            url=listener["callbackUri"],
        )

    async def _recognize_tone(self, tx: StoreTx, call: Call, raw_id: str, tone: str) -> None:
        ops = self._ops(call)
        if not ops or ops[0]["kind"] != "recognize" or ops[0]["target"] != raw_id:
            return
        op = ops[0]
        now = self._core.clock.now()
        if op["inputType"] == "speech":
            return  # a speech-only recognition does not hear keys
        if op["phase"] == "prompt" and op["interruptPrompt"]:
            self._stop_prompt(tx, call, op)
            op["phase"] = "listening"
        if op["phase"] != "listening":
            return  # keys pressed during a prompt that may not be interrupted are not heard
        if op["inputType"] == "choices":
            # The first key decides: the choice with that tone, or an incorrect tone.
            choice = next((c for c in op.get("choices", []) if c.get("tone") == tone), None)
            if choice is None:
                await self._finish(tx, call, op, "Failed", INCORRECT_TONE)
            else:
                phrases = choice.get("phrases") or []
                result = {"label": choice["label"], "recognizedPhrase": phrases[0] if phrases else tone}
                extra = {"recognitionType": "choices", "choiceResult": result}
                await self._finish(tx, call, op, "Completed", CHOICE_MATCHED, extra=extra)
            return
        if tone in op["stopTones"]:
            await self._recognized(tx, call, op, STOP_TONE)
            return
        op["tones"].append(tone)
        if len(op["tones"]) >= op["maxTones"]:
            await self._recognized(tx, call, op, MAX_DIGITS)
            return
        self._listen(tx, call, op, now, op["interTone"])
        await self._schedule(tx, call, op)

    async def _recognized(self, tx: StoreTx, call: Call, op: dict[str, Any], result: Result) -> None:
        extra = {"recognitionType": "dtmf", "dtmfResult": {"tones": list(op["tones"])}}
        await self._finish(tx, call, op, "Completed", result, extra=extra)

    async def _on_step(self, tx: StoreTx, timer: TimerRow) -> None:
        call = await self._core.call_of_timer(tx, timer)
        if call is None or call.state == CallState.DISCONNECTED:
            return
        op_id, token = timer.payload["opId"], timer.payload["token"]
        sends = call.media.get("sends", [])
        send = next((s for s in sends if s["id"] == op_id), None)
        if send is not None:
            sends.remove(send)
            await self._event(tx, call, send, "SendDtmfTonesCompleted", SUCCESS)
            await self._core.save(tx, call)
            return
        op = next((o for o in self._ops(call) if o["id"] == op_id), None)
        if op is None or op["token"] != token:
            return  # finished, canceled or rescheduled since
        now = self._core.clock.now()
        if op["phase"] == "playing":
            if op["loop"]:
                op["dueAt"] = now + sum(float(s["duration"]) for s in op["sources"])
                await self._schedule(tx, call, op)
            else:
                await self._finish(tx, call, op, "Completed", SUCCESS)
        elif op["phase"] == "prompt":
            self._listen(tx, call, op, now, op["initialSilence"])
            await self._schedule(tx, call, op)
        elif op["phase"] == "listening":
            if op.get("speaking"):
                await self._finish(tx, call, op, "Failed", SPEECH_OPTION_NOT_MATCHED)
            elif op["tones"]:
                await self._recognized(tx, call, op, INTER_TONE_TIMEOUT)
            else:
                await self._finish(tx, call, op, "Failed", INITIAL_SILENCE)
        await self._core.save(tx, call)


def _speech_phrases(op: dict[str, Any]) -> list[str] | None:
    """The phrases a recognition listens for: None for free speech, [] when it takes no speech."""
    if op["inputType"] != "choices":
        return None
    return [str(p) for c in op.get("choices", []) for p in c.get("phrases") or []]


def _choice_of(op: dict[str, Any], phrase: str | None, text: str) -> dict[str, Any] | None:
    wanted = _normal(phrase or text)
    for choice in op.get("choices", []):
        if any(_normal(str(p)) == wanted for p in choice.get("phrases") or []):
            return dict(choice)
    return None


def _normal(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def _check_choices(options: RecognizeOptions) -> None:
    if options.input_type != "choices":
        return
    if not options.choices:
        raise InvalidRequest("recognizeOptions.choices must name at least one choice.", code="8523")
    labels: set[str] = set()
    tones: set[str] = set()
    for i, choice in enumerate(options.choices):
        label, tone = choice.get("label"), choice.get("tone")
        if not label:
            raise InvalidRequest(f"recognizeOptions.choices[{i}].label is required.", code="8523")
        if label in labels:
            raise InvalidRequest(f"recognizeOptions.choices: the label '{label}' is used twice.", code="8523")
        labels.add(label)
        if tone is None:
            continue
        if tone not in DTMF_TONES:
            raise InvalidRequest(f"recognizeOptions.choices[{i}].tone: '{tone}' is not a DTMF tone name.", code="8523")
        if tone in tones:
            raise InvalidRequest(f"recognizeOptions.choices: the tone '{tone}' is used twice.", code="8523")
        tones.add(tone)
