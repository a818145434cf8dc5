"""Call Automation routes (what `CallAutomationClient` and `CallConnectionClient` call).

Status codes are the ones the SDK checks exactly (acs-wire.md 2.1); bodies are what its models read.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import Handler, hmac_signed, node_of, resource_of
from callgrid.api.errors import error_response, field, read_object
from callgrid.api.repeatability import operation, repeatable
from callgrid.api.responses import JSONResponse
from callgrid.errors import InvalidRequest
from callgrid.identifiers import CommunicationIdentifier, InvalidIdentifier, from_raw_id, from_wire, phone_number
from callgrid.node import Node
from callgrid.platform.audio import Probe
from callgrid.platform.calls.service import check_operation_context
from callgrid.platform.media import (
    END_SILENCE_SECONDS,
    INITIAL_SILENCE_SECONDS,
    INTER_TONE_SECONDS,
    MAX_TONES,
    RecognizeOptions,
)
from callgrid.platform.streaming import MEDIA_STREAMING, TRANSCRIPTION, parse_options
from callgrid.security import jwks


def _identifier(body: dict[str, Any], name: str, *, required: bool = True) -> CommunicationIdentifier | None:
    if body.get(name) is None:
        if required:
            raise InvalidRequest(f"'{name}' is required.", code="8523")
        return None
    try:
        return from_wire(body[name], name)
    except InvalidIdentifier as exc:
        raise InvalidRequest(str(exc), code="8523") from None


def _required_identifier(body: dict[str, Any], name: str) -> CommunicationIdentifier:
    identifier = _identifier(body, name)
    assert identifier is not None
    return identifier


def _caller_id(body: dict[str, Any]) -> CommunicationIdentifier | None:
    """sourceCallerIdNumber is a PhoneNumberIdentifierModel: `{"value": "+1..."}`."""
    value = field(body, "sourceCallerIdNumber", dict, required=False)
    if value is None:
        return None
    try:
        return phone_number(str(value.get("value", "")))
    except InvalidIdentifier as exc:
        raise InvalidRequest(f"sourceCallerIdNumber: {exc}", code="8523") from None


def _operation_context(body: dict[str, Any]) -> str | None:
    value: str | None = field(body, "operationContext", str, required=False)
    check_operation_context(value)
    return value


def _streams(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return (
        parse_options(MEDIA_STREAMING, body.get("mediaStreamingOptions")),
        parse_options(TRANSCRIPTION, body.get("transcriptionOptions")),
    )


def _custom_context(body: dict[str, Any]) -> dict[str, Any] | None:
    value: dict[str, Any] | None = field(body, "customCallingContext", dict, required=False)
    return value


def _own_connection(handler: Handler) -> Handler:
    """Inside `hmac_signed`: the call connection in the path must be the signing resource's. Another
    resource's connection id is answered exactly as an unknown one (404), before anything else is read."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        node = node_of(request)
        async with node.store.transaction() as tx:
            await node.calls.connection(tx, request.path_params["ccid"], resource_of(request))
        return await handler(request)

    return wrapper


@hmac_signed
@repeatable
async def create_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    raw_targets = field(body, "targets", list)
    targets = []
    for i, raw in enumerate(raw_targets):
        try:
            targets.append(from_wire(raw, f"targets[{i}]"))
        except InvalidIdentifier as exc:
            raise InvalidRequest(str(exc), code="8523") from None
    source = None
    raw_source = field(body, "source", dict, required=False)
    if raw_source is not None:
        try:
            source = from_wire({"communicationUser": raw_source}, "source")
        except InvalidIdentifier as exc:
            raise InvalidRequest(str(exc), code="8523") from None
    callback_uri = field(body, "callbackUri", str)
    operation_context = _operation_context(body)
    caller_id = _caller_id(body)
    display_name = field(body, "sourceDisplayName", str, required=False)
    custom_context = _custom_context(body)
    streams = _streams(body)
    async with operation(node) as op:
        call, connection = await node.calls.create_call(
            op.tx,
            resource_of(request),
            targets=targets,
            callback_uri=callback_uri,
            source=source,
            source_caller_id=caller_id,
            source_display_name=display_name,
            operation_context=operation_context,
            custom_context=custom_context,
            streams=streams,
        )
        return await op.respond(JSONResponse(node.calls.connection_properties(call, connection), status_code=201))


@hmac_signed
@repeatable
async def answer_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    callback_uri = field(body, "callbackUri", str)
    operation_context = _operation_context(body)
    streams = _streams(body)
    async with operation(node) as op:
        call, connection = await node.calls.answer(
            op.tx,
            resource_of(request),
            incoming_call_context=context,
            callback_uri=callback_uri,
            operation_context=operation_context,
            streams=streams,
        )
        # The answer reports the leg as it is at that moment; CallConnected follows on the callback URI.
        return await op.respond(JSONResponse(node.calls.connection_properties(call, connection, state="connecting")))


@hmac_signed
@repeatable
async def connect_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    locator = field(body, "callLocator", dict)
    server_call_id = locator.get("serverCallId")
    if not isinstance(server_call_id, str) or not server_call_id:
        raise InvalidRequest(
            "callgrid connects by serverCallId only: callLocator.serverCallId is required "
            "(group calls and rooms are not simulated).",
            code="8523",
        )
    callback_uri = field(body, "callbackUri", str)
    operation_context = _operation_context(body)
    streams = _streams(body)
    async with operation(node) as op:
        call, connection = await node.calls.connect_call(
            op.tx,
            resource_of(request),
            server_call_id=server_call_id,
            callback_uri=callback_uri,
            operation_context=operation_context,
            streams=streams,
        )
        return await op.respond(JSONResponse(node.calls.connection_properties(call, connection)))


@hmac_signed
@repeatable
async def redirect_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    target = _required_identifier(body, "target")
    async with operation(node) as op:
        await node.calls.redirect(op.tx, resource_of(request), incoming_call_context=context, target=target)
        return await op.respond(Response(status_code=204))


@hmac_signed
@repeatable
async def reject_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    reason = field(body, "callRejectReason", str, required=False)
    async with operation(node) as op:
        await node.calls.reject(op.tx, resource_of(request), incoming_call_context=context, reason=reason)
        return await op.respond(Response(status_code=204))


@hmac_signed
async def get_call_connection(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        call, connection = await node.calls.connection(tx, request.path_params["ccid"], resource_of(request))
    return JSONResponse(node.calls.connection_properties(call, connection))


@hmac_signed
@_own_connection
async def hang_up(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.calls.hang_up(tx, request.path_params["ccid"], for_everyone=False)
    return Response(status_code=204)


# ---- actions on a connection: POST /calling/callConnections/{ccid}:{action} ------------------------


async def _terminate(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    async with operation(node) as op:
        await node.calls.hang_up(op.tx, ccid, for_everyone=True)
        return await op.respond(Response(status_code=204))


async def _transfer(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    target = _required_identifier(body, "targetParticipant")
    operation_context = _operation_context(body)
    transferee = _identifier(body, "transferee", required=False)
    caller_id = _caller_id(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    custom_context = _custom_context(body)
    async with operation(node) as op:
        await node.calls.participants.transfer(
            op.tx,
            ccid,
            target=target,
            transferee=transferee,
            source_caller_id=caller_id,
            operation_context=operation_context,
            operation_callback_uri=callback,
            custom_context=custom_context,
        )
        return await op.respond(JSONResponse(_context_body(operation_context), status_code=202))


async def _probe_sources(node: Node, ccid: str, raw_sources: Any, name: str) -> list[Probe]:
    """Fetch or synthesise and measure play sources, outside any transaction (after checking the call
    can play)."""
    if not isinstance(raw_sources, list):
        raise InvalidRequest(f"'{name}' must be an array of play sources.", code="8523")
    async with node.store.transaction() as tx:
        await node.calls.active_connection(tx, ccid)
    probes = []
    for i, source in enumerate(raw_sources):
        kind = str(source.get("kind", "")).lower() if isinstance(source, dict) else ""
        cache_id = source.get("playSourceCacheId") if isinstance(source, dict) else None
        if kind == "file":
            file = source.get("file")
            uri = file.get("uri") if isinstance(file, dict) else None
            if not isinstance(uri, str) or not uri:
                raise InvalidRequest(f"{name}[{i}].file.uri is required.", code="8523")
            probes.append(await node.prompts.file(uri, cache_id if isinstance(cache_id, str) else None))
        elif kind == "text":
            text = source.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("text"), str) or not text["text"].strip():
                raise InvalidRequest(f"{name}[{i}].text.text is required.", code="8523")
            voice, locale, gender = text.get("voiceName"), text.get("sourceLocale"), text.get("voiceKind")
            probes.append(
                await node.prompts.text(
                    text["text"],
                    voice=voice if isinstance(voice, str) else None,
                    language=locale if isinstance(locale, str) else None,
                    voice_kind=gender if isinstance(gender, str) else None,
                    ssml=False,
                )
            )
        elif kind == "ssml":
            ssml = source.get("ssml")
            if not isinstance(ssml, dict) or not isinstance(ssml.get("ssmlText"), str) or not ssml["ssmlText"].strip():
                raise InvalidRequest(f"{name}[{i}].ssml.ssmlText is required.", code="8523")
            probes.append(await node.prompts.text(ssml["ssmlText"], voice=None, language=None, ssml=True))
        else:
            raise InvalidRequest(f"{name}[{i}].kind must be file, text or ssml.", code="8523")
    return probes


async def _play(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    play_to = [_wire_identifier(t, "playTo") for t in field(body, "playTo", list, required=False) or []]
    options = field(body, "playOptions", dict, required=False) or {}
    sources = await _probe_sources(node, ccid, body.get("playSources"), "playSources")
    async with node.store.transaction() as tx:
        await node.calls.media.play(
            tx,
            ccid,
            sources=sources,
            play_to=play_to,
            loop=bool(options.get("loop", False)),
            interrupt=bool(body.get("interruptCallMediaOperation", False)),
            operation_context=operation_context,
            callback_uri=callback,
        )
    return Response(status_code=202)


async def _recognize(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    input_type = field(body, "recognizeInputType", str)
    if input_type not in ("dtmf", "speech", "speechOrDtmf", "choices"):
        raise InvalidRequest("recognizeInputType must be dtmf, speech, speechOrDtmf or choices.", code="8523")
    options = field(body, "recognizeOptions", dict)
    target = _required_identifier(options, "targetParticipant")
    dtmf = options.get("dtmfOptions") or {}
    if not isinstance(dtmf, dict):
        raise InvalidRequest("recognizeOptions.dtmfOptions must be an object.", code="8523")
    prompts: list[Any] = []
    if body.get("playPrompt") is not None:
        prompts.append(body["playPrompt"])
    more = body.get("playPrompts") or []
    if not isinstance(more, list):
        raise InvalidRequest("'playPrompts' must be an array of play sources.", code="8523")
    prompts.extend(more)
    probes = await _probe_sources(node, ccid, prompts, "playPrompts") if prompts else []
    recognize = RecognizeOptions(
        input_type=input_type,
        target=target,
        prompts=probes,
        interrupt_prompt=bool(options.get("interruptPrompt", False)),
        initial_silence_seconds=_seconds(options, "initialSilenceTimeoutInSeconds", INITIAL_SILENCE_SECONDS, 300),
        inter_tone_seconds=_seconds(dtmf, "interToneTimeoutInSeconds", INTER_TONE_SECONDS, 60),
        max_tones=int(_seconds(dtmf, "maxTonesToCollect", MAX_TONES, 128)),
        stop_tones=_stop_tones(dtmf.get("stopTones")),
        choices=_choices(options.get("choices")),
        end_silence_seconds=_end_silence(options.get("speechOptions")),
    )
    async with node.store.transaction() as tx:
        await node.calls.media.recognize(
            tx,
            ccid,
            recognize,
            interrupt=bool(body.get("interruptCallMediaOperation", False)),
            operation_context=operation_context,
            callback_uri=callback,
        )
    return Response(status_code=202)


def _stop_tones(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidRequest("recognizeOptions.dtmfOptions.stopTones must be an array of tone names.", code="8523")
    return value


def _choices(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise InvalidRequest("recognizeOptions.choices must be an array of choices.", code="8523")
    choices: list[dict[str, Any]] = []
    for i, choice in enumerate(value):
        label, tone, phrases = choice.get("label"), choice.get("tone"), choice.get("phrases")
        if not isinstance(label, str) or (tone is not None and not isinstance(tone, str)):
            raise InvalidRequest(f"recognizeOptions.choices[{i}] needs a string label and tone.", code="8523")
        if phrases is not None and (
            not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases)
        ):
            raise InvalidRequest(f"recognizeOptions.choices[{i}].phrases must be an array of phrases.", code="8523")
        choices.append({"label": label, "tone": tone, "phrases": list(phrases or [])})
    return choices


def _end_silence(value: Any) -> float:
    """speechOptions.endSilenceTimeoutInMs: how long the caller must be quiet for the utterance to end."""
    if value is None:
        return END_SILENCE_SECONDS
    if not isinstance(value, dict):
        raise InvalidRequest("recognizeOptions.speechOptions must be an object.", code="8523")
    ms = value.get("endSilenceTimeoutInMs")
    if ms is None:
        return END_SILENCE_SECONDS
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 < ms <= 60_000:
        raise InvalidRequest("speechOptions.endSilenceTimeoutInMs must be between 1 and 60000.", code="8523")
    return ms / 1000.0


def _seconds(body: dict[str, Any], name: str, default: float, maximum: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= maximum:
        raise InvalidRequest(f"{name} must be a number greater than 0 and at most {maximum:g}.", code="8523")
    return float(value)


async def _cancel_media(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    async with node.store.transaction() as tx:
        await node.calls.media.cancel_all(tx, ccid)
    return Response(status_code=202)


async def _start_dtmf(node: Node, ccid: str, body: dict[str, Any], api_version: str | None = None) -> Response:
    target = _required_identifier(body, "targetParticipant")
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    async with node.store.transaction() as tx:
        await node.calls.media.start_continuous_dtmf(
            tx, ccid, target, operation_context=operation_context, callback_uri=callback, api_version=api_version
        )
    return Response(status_code=200)


async def _stop_dtmf(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    target = _required_identifier(body, "targetParticipant")
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    async with node.store.transaction() as tx:
        await node.calls.media.stop_continuous_dtmf(
            tx, ccid, target, operation_context=operation_context, callback_uri=callback
        )
    return Response(status_code=200)


async def _send_dtmf(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    target = _required_identifier(body, "targetParticipant")
    tones = [str(t) for t in field(body, "tones", list)]
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    async with operation(node) as op:
        await node.calls.media.send_dtmf_tones(
            op.tx, ccid, tones, target, operation_context=operation_context, callback_uri=callback
        )
        return await op.respond(JSONResponse(_context_body(operation_context), status_code=202))


def _wire_identifier(value: Any, name: str) -> CommunicationIdentifier:
    try:
        return from_wire(value, name)
    except InvalidIdentifier as exc:
        raise InvalidRequest(str(exc), code="8523") from None


async def _hold(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    target = _required_identifier(body, "targetParticipant")
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    music_source = field(body, "playSourceInfo", dict, required=False)
    music = (await _probe_sources(node, ccid, [music_source], "playSourceInfo"))[0] if music_source else None
    async with node.store.transaction() as tx:
        await node.calls.participants.hold(
            tx, ccid, target, music=music, operation_context=operation_context, operation_callback_uri=callback
        )
    return Response(status_code=200)


async def _unhold(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    target = _required_identifier(body, "targetParticipant")
    _operation_context(body)
    async with node.store.transaction() as tx:
        await node.calls.participants.unhold(tx, ccid, target)
    return Response(status_code=200)


async def _stream_action(node: Node, ccid: str, body: dict[str, Any], kind: str, start: bool) -> Response:
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    locale = field(body, "locale", str, required=False)
    model = field(body, "speechModelEndpointId", str, required=False)
    async with node.store.transaction() as tx:
        if start:
            await node.calls.streaming.start(
                tx,
                ccid,
                kind,
                operation_context=operation_context,
                callback_uri=callback,
                locale=locale,
                speech_model_endpoint_id=model,
            )
        else:
            await node.calls.streaming.stop(tx, ccid, kind, operation_context=operation_context, callback_uri=callback)
    return Response(status_code=202)


async def _start_media_streaming(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    return await _stream_action(node, ccid, body, MEDIA_STREAMING, True)


async def _stop_media_streaming(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    return await _stream_action(node, ccid, body, MEDIA_STREAMING, False)


async def _start_transcription(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    return await _stream_action(node, ccid, body, TRANSCRIPTION, True)


async def _stop_transcription(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    return await _stream_action(node, ccid, body, TRANSCRIPTION, False)


async def _update_transcription(node: Node, ccid: str, body: dict[str, Any]) -> Response:
    locale = field(body, "locale", str)
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    async with node.store.transaction() as tx:
        await node.calls.streaming.update_transcription(
            tx, ccid, locale=locale, operation_context=operation_context, callback_uri=callback
        )
    return Response(status_code=202)


_CONNECTION_ACTIONS: dict[str, Callable[[Node, str, dict[str, Any]], Awaitable[Response]]] = {
    "terminate": _terminate,
    "transferToParticipant": _transfer,
    "play": _play,
    "recognize": _recognize,
    "cancelAllMediaOperations": _cancel_media,
    "startContinuousDtmfRecognition": _start_dtmf,
    "stopContinuousDtmfRecognition": _stop_dtmf,
    "sendDtmfTones": _send_dtmf,
    "hold": _hold,
    "unhold": _unhold,
    "startMediaStreaming": _start_media_streaming,
    "stopMediaStreaming": _stop_media_streaming,
    "startTranscription": _start_transcription,
    "stopTranscription": _stop_transcription,
    "updateTranscription": _update_transcription,
}
# Sent with Repeatability headers by the SDK (acs-wire.md 1.6); the others are not.
_REPEATABLE_ACTIONS = {"terminate", "transferToParticipant", "sendDtmfTones"}


@hmac_signed
@_own_connection
@repeatable
async def repeatable_connection_action(request: Request) -> Response:
    return await _connection_action(request)


@hmac_signed
@_own_connection
async def connection_action(request: Request) -> Response:
    return await _connection_action(request)


async def _connection_action(request: Request) -> Response:
    action = request.path_params["action"]
    handler = _CONNECTION_ACTIONS.get(action)
    if handler is None:
        return error_response(
            501, "NotImplemented", f"callgrid does not serve the call connection action ':{action}' yet."
        )
    body = await read_object(request, allow_empty=True)
    if action == "startContinuousDtmfRecognition":
        # The tones' events take the shape of the api-version that asked for them (see media.py).
        api_version = request.query_params.get("api-version")
        return await _start_dtmf(node_of(request), request.path_params["ccid"], body, api_version)
    return await handler(node_of(request), request.path_params["ccid"], body)


# Every action ACS's call-connection and participants paths have (the SDK's operations): an action callgrid
# does not serve yet is 501; any other name is an unknown path, 404 as ACS's front door answers it.
_ACS_CONNECTION_ACTIONS = frozenset(
    {
        *_CONNECTION_ACTIONS,
        "startMediaStreaming",
        "stopMediaStreaming",
        "updateMediaStreaming",
        "startTranscription",
        "stopTranscription",
        "updateTranscription",
    }
)
_ACS_PARTICIPANTS_ACTIONS = frozenset({"add", "remove", "mute", "unmute", "cancelAddParticipant", "moveHere"})


def _unknown_route(request: Request) -> Response:
    return error_response(404, "NotFound", f"No route for {request.method} {request.url.path}.")


async def connection_action_router(request: Request) -> Response:
    if request.path_params["action"] not in _ACS_CONNECTION_ACTIONS:
        return _unknown_route(request)
    if request.path_params["action"] in _REPEATABLE_ACTIONS:
        return await repeatable_connection_action(request)
    return await connection_action(request)


# ---- participants ---------------------------------------------------------------------------------


@hmac_signed
@_own_connection
async def list_participants(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        participants = await node.calls.participants.list_all(tx, request.path_params["ccid"])
    return JSONResponse({"value": participants})


@hmac_signed
@_own_connection
async def get_participant(request: Request) -> Response:
    node = node_of(request)
    # The async SDK signs the encoded id but may send it decoded; either way this is the raw id.
    raw_id = unquote(request.path_params["rawId"])
    async with node.store.transaction() as tx:
        participant = await node.calls.participants.get(tx, request.path_params["ccid"], raw_id)
    return JSONResponse(participant)


async def participants_action_router(request: Request) -> Response:
    if request.path_params["action"] not in _ACS_PARTICIPANTS_ACTIONS:
        return _unknown_route(request)
    return await participants_action(request)


@hmac_signed
@_own_connection
@repeatable
async def participants_action(request: Request) -> Response:
    node = node_of(request)
    ccid = request.path_params["ccid"]
    action = request.path_params["action"]
    body = await read_object(request)
    operation_context = _operation_context(body)
    callback = field(body, "operationCallbackUri", str, required=False)
    actions = node.calls.participants
    if action == "add":
        target = _required_identifier(body, "participantToAdd")
        timeout = field(body, "invitationTimeoutInSeconds", int, required=False)
        caller_id = _caller_id(body)
        custom_context = _custom_context(body)
        async with operation(node) as op:
            offer, _ = await actions.add(
                op.tx,
                ccid,
                target=target,
                source_caller_id=caller_id,
                invitation_timeout=timeout,
                operation_context=operation_context,
                operation_callback_uri=callback,
                custom_context=custom_context,
            )
            result = {
                "participant": {"identifier": target.to_wire(), "isMuted": False, "isOnHold": False},
                "invitationId": offer.invitation_id,
                **_context_body(operation_context),
            }
            return await op.respond(JSONResponse(result, status_code=202))
    if action == "remove":
        target = _required_identifier(body, "participantToRemove")
        async with operation(node) as op:
            await actions.remove(
                op.tx, ccid, target=target, operation_context=operation_context, operation_callback_uri=callback
            )
            return await op.respond(JSONResponse(_context_body(operation_context), status_code=202))
    if action == "mute":
        raw_targets = field(body, "targetParticipants", list)
        try:
            targets = [from_wire(t, "targetParticipants") for t in raw_targets]
        except InvalidIdentifier as exc:
            raise InvalidRequest(str(exc), code="8523") from None
        async with operation(node) as op:
            await actions.mute(op.tx, ccid, targets)
            return await op.respond(JSONResponse(_context_body(operation_context), status_code=200))
    if action == "moveHere":
        raw_targets = field(body, "targetParticipants", list)
        from_call = field(body, "fromCall", str)
        try:
            targets = [from_wire(t, "targetParticipants") for t in raw_targets]
        except InvalidIdentifier as exc:
            raise InvalidRequest(str(exc), code="8523") from None
        async with operation(node) as op:
            moved = await actions.move_here(
                op.tx,
                ccid,
                targets=targets,
                from_call=from_call,
                operation_context=operation_context,
                operation_callback_uri=callback,
            )
            result = {
                "participants": [
                    {"identifier": from_raw_id(raw_id).to_wire(), "isMuted": False, "isOnHold": False}
                    for raw_id in moved
                ],
                "fromCall": from_call,
                **_context_body(operation_context),
            }
            return await op.respond(JSONResponse(result, status_code=202))
    if action == "cancelAddParticipant":
        invitation_id = field(body, "invitationId", str)
        async with operation(node) as op:
            await actions.cancel_add(
                op.tx,
                ccid,
                invitation_id=invitation_id,
                operation_context=operation_context,
                operation_callback_uri=callback,
            )
            canceled = {"invitationId": invitation_id, **_context_body(operation_context)}
            return await op.respond(JSONResponse(canceled, status_code=202))
    return error_response(501, "NotImplemented", f"callgrid does not serve 'participants:{action}' yet.")


def _context_body(operation_context: str | None) -> dict[str, Any]:
    return {} if operation_context is None else {"operationContext": operation_context}


async def openid_configuration(request: Request) -> Response:
    node = node_of(request)
    return JSONResponse(
        {
            "issuer": node.settings.callback_issuer,
            "jwks_uri": f"{node.settings.endpoint}/calling/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
        }
    )


async def signing_keys(request: Request) -> Response:
    node = node_of(request)
    return JSONResponse(jwks([node.keys.callback_key.public_key()]))


routes = [
    Route("/calling/.well-known/acsopenidconfiguration", openid_configuration, methods=["GET"]),
    Route("/calling/keys", signing_keys, methods=["GET"]),
    Route("/calling/callConnections:answer", answer_call, methods=["POST"]),
    Route("/calling/callConnections:redirect", redirect_call, methods=["POST"]),
    Route("/calling/callConnections:reject", reject_call, methods=["POST"]),
    Route("/calling/callConnections:connect", connect_call, methods=["POST"]),
    Route("/calling/callConnections", create_call, methods=["POST"]),
    # Action routes before the plain ones: "{ccid}" would otherwise swallow ":terminate".
    Route("/calling/callConnections/{ccid}/participants:{action}", participants_action_router, methods=["POST"]),
    Route("/calling/callConnections/{ccid}/participants", list_participants, methods=["GET"]),
    Route("/calling/callConnections/{ccid}/participants/{rawId}", get_participant, methods=["GET"]),
    Route("/calling/callConnections/{ccid}:{action}", connection_action_router, methods=["POST"]),
    Route("/calling/callConnections/{ccid}", get_call_connection, methods=["GET"]),
    Route("/calling/callConnections/{ccid}", hang_up, methods=["DELETE"]),
]
