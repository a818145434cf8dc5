"""callgrid's simulator routes for what people on a call do: hang up, press keys, speak, and what they heard."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, hmac_signed_audio, node_of, resource_of
from callgrid.api.body import AUDIO_BODY_LIMIT
from callgrid.api.errors import field, read_object
from callgrid.api.responses import JSONResponse
from callgrid.errors import InvalidRequest, NotFound
from callgrid.media import codecs, speech
from callgrid.media.plane import TONE_KEYS
from callgrid.platform.calls.models import CallState

# A key as typed (1, #, a) -> the tone name ACS uses.
_KEYS = {key.lower(): name for name, key in TONE_KEYS.items()}


@hmac_signed
async def hang_up(request: Request) -> Response:
    """A simulated party hangs up: the caller by default (abandoning a ringing call), or `participant`."""
    node = node_of(request)
    body = await read_object(request, allow_empty=True)
    participant = field(body, "participant", str, required=False)
    async with node.store.transaction() as tx:
        await node.calls.get_call(tx, request.path_params["serverCallId"], resource_of(request))
        call = await node.calls.hang_up_participant(tx, request.path_params["serverCallId"], participant)
    return JSONResponse({"serverCallId": call.server_call_id, "state": call.state})


@hmac_signed
async def participant_hang_up(request: Request) -> Response:
    node = node_of(request)
    raw_id = unquote(request.path_params["rawId"])
    async with node.store.transaction() as tx:
        await node.calls.get_call(tx, request.path_params["serverCallId"], resource_of(request))
        call = await node.calls.hang_up_participant(tx, request.path_params["serverCallId"], raw_id)
    return JSONResponse({"serverCallId": call.server_call_id, "state": call.state})


@hmac_signed
async def send_dtmf(request: Request) -> Response:
    """The simulated participant presses keys: `{"tones": ["one", "pound"]}` or `{"tones": "1#"}`."""
    node = node_of(request)
    body = await read_object(request)
    tones = _tone_names(field(body, "tones", (list, str)))
    raw_id = unquote(request.path_params["rawId"])
    async with node.store.transaction() as tx:
        await node.calls.get_call(tx, request.path_params["serverCallId"], resource_of(request))
        call = await node.calls.media.caller_tones(tx, request.path_params["serverCallId"], raw_id, tones)
    return JSONResponse({"serverCallId": call.server_call_id, "tones": tones})


def _tone_names(value: list[object] | str) -> list[str]:
    if isinstance(value, str):
        names = []
        for key in value.lower():
            if key not in _KEYS:
                raise InvalidRequest(f"'{key}' is not a DTMF key (0-9, *, #, A-D).", code="8523")
            names.append(_KEYS[key])
        return names
    return [str(t) for t in value]


async def _speaking_party(request: Request, server_call_id: str, raw_id: str) -> None:
    node = node_of(request)
    async with node.store.transaction() as tx:
        call = await node.calls.get_call(tx, server_call_id, resource_of(request))
    if call.state != CallState.CONNECTED:
        raise InvalidRequest("Only a party of a connected call can speak.", code="8501")
    if call.participant(raw_id) is None:
        raise NotFound(f"'{raw_id}' is not in the call.", code="8522")


@hmac_signed
async def say(request: Request) -> Response:
    """The simulated participant says something: `{"text": "I want sales", "voice": "en-US-JennyNeural"}`."""
    node = node_of(request)
    body = await read_object(request)
    text = field(body, "text", str)
    voice = field(body, "voice", str, required=False)
    if not text.strip():
        raise InvalidRequest("'text' must say something.", code="8523")
    server_call_id, raw_id = request.path_params["serverCallId"], unquote(request.path_params["rawId"])
    await _speaking_party(request, server_call_id, raw_id)
    try:
        pcm = await speech.synthesize(text, voice=voice)
    except speech.SpeechUnavailable as exc:
        raise InvalidRequest(f"Speech synthesis failed: {exc}", code="8565") from None
    ends_in = node.media.speak(server_call_id, raw_id, pcm)
    return JSONResponse({"durationMs": round(len(pcm) / 16), "endsInMs": round(ends_in * 1000)}, status_code=202)


@hmac_signed_audio
async def play(request: Request) -> Response:
    """The simulated participant plays audio into the call: `{"url": "https://..."}` or `{"audio": "<base64
    WAV or MP3>"}` (any rate and channels; it is converted)."""
    node = node_of(request)
    body = await read_object(request, limit=AUDIO_BODY_LIMIT)
    url = field(body, "url", str, required=False)
    audio = field(body, "audio", str, required=False)
    if (url is None) == (audio is None):
        raise InvalidRequest("Give exactly one of 'url' and 'audio' (base64).", code="8523")
    server_call_id, raw_id = request.path_params["serverCallId"], unquote(request.path_params["rawId"])
    await _speaking_party(request, server_call_id, raw_id)
    if url is not None:
        probe = await node.prompts.file(url)
        if not probe.ok or probe.key is None:
            raise InvalidRequest(probe.message or "The audio could not be read.", code=str(probe.sub_code or 8535))
        pcm = node.media.prompts.get(probe.key)
    else:
        try:
            pcm = codecs.decode(base64.b64decode(audio or "", validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"'audio' is not base64 WAV or MP3 audio: {exc}", code="8535") from None
    ends_in = node.media.speak(server_call_id, raw_id, pcm)
    return JSONResponse({"durationMs": round(len(pcm) / 16), "endsInMs": round(ends_in * 1000)}, status_code=202)


@hmac_signed
async def heard(request: Request) -> Response:
    """What the simulated participant heard since joining, as 16 kHz mono WAV (its last 5 minutes in the call)."""
    node = node_of(request)
    server_call_id, raw_id = request.path_params["serverCallId"], unquote(request.path_params["rawId"])
    async with node.store.transaction() as tx:
        call = await node.calls.get_call(tx, server_call_id, resource_of(request))
    if call.participant(raw_id) is None:
        raise NotFound(f"'{raw_id}' is not in the call.", code="8522")
    pcm = node.media.heard(server_call_id, raw_id)
    if pcm is None:
        raise NotFound(f"Nothing was heard by '{raw_id}' in this call (the call ended, or the server restarted).")
    return Response(codecs.encode_wav([pcm]), media_type="audio/wav")


routes = [
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:say", say, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:play", play, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}/audio", heard, methods=["GET"]),
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:sendDtmf", send_dtmf, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}:hangUp", hang_up, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:hangUp", participant_hang_up, methods=["POST"]),
]
