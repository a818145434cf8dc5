"""callgrid's simulator routes for what people on a call do: hang up, press keys."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of
from callgrid.api.errors import field, read_object
from callgrid.errors import InvalidRequest

_KEYS = {
    **{
        str(d): n
        for d, n in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    },
    "*": "asterisk",
    "#": "pound",
    "a": "a",
    "b": "b",
    "c": "c",
    "d": "d",
}


@hmac_signed
async def hang_up(request: Request) -> Response:
    """A simulated party hangs up: the caller by default (abandoning a ringing call), or `participant`."""
    node = node_of(request)
    body = await read_object(request, allow_empty=True)
    participant = field(body, "participant", str, required=False)
    async with node.store.transaction() as tx:
        call = await node.calls.hang_up_participant(tx, request.path_params["serverCallId"], participant)
    return JSONResponse({"serverCallId": call.server_call_id, "state": call.state})


@hmac_signed
async def participant_hang_up(request: Request) -> Response:
    node = node_of(request)
    raw_id = unquote(request.path_params["rawId"])
    async with node.store.transaction() as tx:
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


routes = [
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:sendDtmf", send_dtmf, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}:hangUp", hang_up, methods=["POST"]),
    Route("/callgrid/v1/calls/{serverCallId}/participants/{rawId}:hangUp", participant_hang_up, methods=["POST"]),
]
