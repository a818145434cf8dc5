"""Media operations of a call: play, DTMF recognition, continuous DTMF, sending tones.

Media operations queue per call; the head one runs. Play sources are fetched and measured before the
transaction (`platform/audio.py`); here they complete after their real duration on the clock. Keys
pressed by simulated callers arrive through `caller_tones`. What callgrid cannot do for real (speech
recognition, text-to-speech) fails as ACS fails when the feature is unavailable, with a clear message.
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
INCORRECT_TONE: Result = (400, 8534, "Action failed, incorrect tone detected.")
NOT_SIMULATED = 8565

SPEECH_UNAVAILABLE = (
    "Action failed, bad request to Cognitive Services: callgrid does not recognize speech "
    "(no speech service is simulated); use recognizeInputType 'dtmf', 'speechOrDtmf', or 'choices' with tones."
)
TTS_UNAVAILABLE = (
    "Action failed, bad request to Cognitive Services: callgrid does not synthesize speech "
    "(no text-to-speech is simulated); play a file source instead."
)


def unavailable_source(kind: str) -> Probe:
    """A text or SSML source: answered as a call without Cognitive Services would answer it."""
    return Probe(sub_code=NOT_SIMULATED, message=TTS_UNAVAILABLE + f" (play source kind '{kind}')")


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
    # recognizeInputType "choices": each {"label", "tone"?}; callgrid matches the tones only.
    choices: list[dict[str, str | None]] = field(default_factory=list)


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
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        self._require_participant(call, target)
        listeners = call.media.setdefault("continuous", {})
        listeners[target.raw_id] = {
            "connection": connection.call_connection_id,
            "sequence": 0,
            "operationContext": operation_context,
            "callbackUri": callback_uri,
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
        for tone in tones:
            await self._continuous_tone(tx, call, raw_id, tone)
            await self._recognize_tone(tx, call, raw_id, tone)
        await core.save(tx, call)
        return call

    # ---- internals ----------------------------------------------------------------------------------

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
        if op["kind"] == "recognize" and not _hears_tones(op):
            await self._finish(tx, call, op, "Failed", (400, NOT_SIMULATED, SPEECH_UNAVAILABLE))
            return
        if failed is not None:
            source = op["sources"][failed]
            result = (400, int(source["subCode"]), str(source["message"]))
            await self._finish(tx, call, op, "Failed", result, extra={"failedPlaySourceIndex": failed})
            return
        total = sum(float(s["duration"]) for s in op["sources"])
        if op["kind"] == "play":
            op["phase"] = "playing"
            op["dueAt"] = now + total
            await self._event(tx, call, op, "PlayStarted", SUCCESS)
        elif total > 0:
            op["phase"] = "prompt"
            op["dueAt"] = now + total
        else:
            self._listen(op, now, op["initialSilence"])
        call.record(now, "mediaStarted", kind=op["kind"], operationId=op["id"])
        await self._schedule(tx, call, op)

    def _listen(self, op: dict[str, Any], now: float, wait: float) -> None:
        op["phase"] = "listening"
        op["dueAt"] = now + wait

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
        await self._core.callback(
            tx,
            call,
            connection,
            "ContinuousDtmfRecognitionToneReceived",
            operation_context=listener["operationContext"],
            result=SUCCESS,
            extra={"sequenceId": listener["sequence"], "tone": tone},
            url=listener["callbackUri"],
        )

    async def _recognize_tone(self, tx: StoreTx, call: Call, raw_id: str, tone: str) -> None:
        ops = self._ops(call)
        if not ops or ops[0]["kind"] != "recognize" or ops[0]["target"] != raw_id:
            return
        op = ops[0]
        now = self._core.clock.now()
        if op["phase"] == "prompt" and op["interruptPrompt"]:
            op["phase"] = "listening"
        if op["phase"] != "listening":
            return  # keys pressed during a prompt that may not be interrupted are not heard
        if op["inputType"] == "choices":
            # The first key decides: the choice with that tone, or an incorrect tone.
            label = next((c["label"] for c in op.get("choices", []) if c.get("tone") == tone), None)
            if label is None:
                await self._finish(tx, call, op, "Failed", INCORRECT_TONE)
            else:
                # On DTMF the service names the choice only (recognizedPhrase is for speech).
                extra = {"recognitionType": "choices", "choiceResult": {"label": label}}
                await self._finish(tx, call, op, "Completed", CHOICE_MATCHED, extra=extra)
            return
        if tone in op["stopTones"]:
            await self._recognized(tx, call, op, STOP_TONE)
            return
        op["tones"].append(tone)
        if len(op["tones"]) >= op["maxTones"]:
            await self._recognized(tx, call, op, MAX_DIGITS)
            return
        self._listen(op, now, op["interTone"])
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
            self._listen(op, now, op["initialSilence"])
            await self._schedule(tx, call, op)
        elif op["phase"] == "listening":
            if op["tones"]:
                await self._recognized(tx, call, op, INTER_TONE_TIMEOUT)
            else:
                await self._finish(tx, call, op, "Failed", INITIAL_SILENCE)
        await self._core.save(tx, call)


def _hears_tones(op: dict[str, Any]) -> bool:
    """Whether a recognize operation can complete here: speech is not simulated, keys are."""
    if op["inputType"] in ("dtmf", "speechOrDtmf"):
        return True
    return op["inputType"] == "choices" and any(c.get("tone") for c in op.get("choices", []))


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
