"""What a developer does from the console, each through the domain service the HTTP API uses too.

Bodies are JSON objects (the console's script sends its forms so); answers are `{"message": ...}` or
ACS's `{"error": {"code", "message"}}` with its status, mapped once by `api/errors.py`.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callgrid.api.errors import field, read_object
from callgrid.console.access import action, data
from callgrid.console.router_link import RouterLink
from callgrid.console.softphone import Softphones
from callgrid.errors import Conflict, InvalidRequest, NotFound
from callgrid.eventgrid.delivery.deadletter import replay
from callgrid.eventgrid.subscriptions import EVENT_GRID_SCHEMA, EXTENSION_TYPE
from callgrid.media.plane import TONE_KEYS
from callgrid.node import Node
from callgrid.platform.calls import DeviceBehaviour
from callgrid.platform.calls.service import parse_identifier

_KEYS = {key.lower(): name for name, key in TONE_KEYS.items()}
SDP_BODY_LIMIT = 64 * 1024
_LAST_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, as clock:advance refuses beyond it


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _done(request: Request, message: str, status: int = 200, **extra: Any) -> Response:
    request.app.state.console_journal.poke()
    return JSONResponse({"message": message, **extra}, status_code=status)


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = field(body, name, str, required=required)
    if value is None or not value.strip():
        if required:
            raise InvalidRequest(f"'{name}' is required.")
        return None
    return str(value).strip()


@action
async def place_call(request: Request) -> Response:
    node = _node(request)
    body = await read_object(request)
    source = parse_identifier(_text(body, "from"), "from")
    target = parse_identifier(_text(body, "to"), "to")
    display_name = _text(body, "callerDisplayName", required=False) or ""
    async with node.store.transaction() as tx:
        call = await node.calls.place_call(
            tx, node.resource, source=source, target=target, caller_display_name=display_name
        )
    return _done(request, f"Calling {target.raw_id}: call {call.server_call_id}", 201, serverCallId=call.server_call_id)


@action
async def device(request: Request) -> Response:
    """The device a call rings answers it, declines it, or is busy."""
    node = _node(request)
    body = await read_object(request)
    target = _text(body, "target") or ""
    raw_action = _text(body, "action") or ""
    try:
        behaviour = DeviceBehaviour(raw_action)
    except ValueError:
        raise InvalidRequest("'action' must be answer, decline, busy or unreachable.") from None
    async with node.store.transaction() as tx:
        await node.calls.device_act(tx, request.path_params["serverCallId"], target, behaviour)
    return _done(request, f"{target}: {behaviour.value}")


@action
async def hang_up(request: Request) -> Response:
    node = _node(request)
    body = await read_object(request, allow_empty=True)
    participant = _text(body, "participant", required=False)
    async with node.store.transaction() as tx:
        call = await node.calls.hang_up_participant(tx, request.path_params["serverCallId"], participant)
    return _done(request, f"{participant or call.source} hung up")


def _tones(keys: str) -> list[str]:
    tones = []
    for key in keys.lower():
        if key not in _KEYS:
            raise InvalidRequest(f"'{key}' is not a DTMF key (0-9, *, #, A-D).", code="8523")
        tones.append(_KEYS[key])
    return tones


@action
async def send_dtmf(request: Request) -> Response:
    node = _node(request)
    body = await read_object(request)
    participant = _text(body, "participant") or ""
    keys = _text(body, "tones") or ""
    tones = _tones(keys)
    async with node.store.transaction() as tx:
        await node.calls.media.caller_tones(tx, request.path_params["serverCallId"], participant, tones)
    return _done(request, f"{participant} pressed {keys}")


@action
async def own_number(request: Request) -> Response:
    node = _node(request)
    body = await read_object(request)
    number = _text(body, "phoneNumber") or ""
    async with node.store.transaction() as tx:
        doc = await node.numbers.own(tx, node.resource, number)
    return _done(request, f"The resource owns {doc['phoneNumber']}", 201)


@action
async def release_number(request: Request) -> Response:
    node = _node(request)
    number = unquote(request.path_params["phoneNumber"])
    async with node.store.transaction() as tx:
        await node.numbers.release(tx, node.resource, number)
    return _done(request, f"Released {number}")


@action
async def create_identity(request: Request) -> Response:
    node = _node(request)
    async with node.store.transaction() as tx:
        user_id = await node.identities.create_user(tx, node.resource)
    return _done(request, f"Created {user_id}", 201, rawId=user_id)


def _filter(body: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    types = _text(body, "includedEventTypes", required=False)
    if types:
        spec["includedEventTypes"] = [t.strip() for t in types.split(",") if t.strip()]
    for name in ("subjectBeginsWith", "subjectEndsWith"):
        value = _text(body, name, required=False)
        if value:
            spec[name] = value
    advanced = _text(body, "advancedFilters", required=False)
    if advanced:
        try:
            spec["advancedFilters"] = json.loads(advanced)
        except ValueError as exc:
            raise InvalidRequest(f"Advanced filters are not valid JSON: {exc}.") from None
    return spec


def _whole(body: dict[str, Any], name: str) -> int | None:
    text = _text(body, name, required=False)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise InvalidRequest(f"'{name}' must be a whole number.")
    return int(text)


@action
async def put_subscription(request: Request) -> Response:
    """An event subscription on the resource's system events, validated as ARM's PUT validates it."""
    node = _node(request)
    body = await read_object(request)
    name = _text(body, "name") or ""
    properties: dict[str, Any] = {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": _text(body, "endpointUrl")}},
        "filter": _filter(body),
    }
    retry = {k: v for k in ("maxDeliveryAttempts", "eventTimeToLiveInMinutes") if (v := _whole(body, k)) is not None}
    if retry:
        properties["retryPolicy"] = {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440, **retry}
    dead_letter_id = _text(body, "deadLetterResourceId", required=False)
    if dead_letter_id:
        properties["deadLetterDestination"] = {
            "endpointType": "StorageBlob",
            "properties": {
                "resourceId": dead_letter_id,
                "blobContainerName": _text(body, "deadLetterContainer", required=False) or "",
            },
        }
    collection = f"{node.resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/"
    async with node.store.transaction() as tx:
        doc, created = await node.subscriptions.put(
            tx,
            arm_id=collection + name,
            name=name,
            topic=node.resource.arm_id,
            resource_type=EXTENSION_TYPE,
            body={"properties": properties},
            source=node.resource.topic,
            input_schema=EVENT_GRID_SCHEMA,
        )
    node.subscriptions_changed()
    state = doc["properties"]["provisioningState"]
    verb = "Created" if created else "Replaced"
    return _done(request, f"{verb} {name} ({state}: a webhook answers the validation handshake first)", 201)


@action
async def delete_subscription(request: Request) -> Response:
    node = _node(request)
    body = await read_object(request)
    arm_id = _text(body, "id") or ""
    async with node.store.transaction() as tx:
        deleted = await node.subscriptions.delete(tx, arm_id)
    node.subscriptions_changed()
    if not deleted:
        raise NotFound(f"No event subscription '{arm_id}'.")
    return _done(request, f"Deleted {arm_id.rsplit('/', 1)[-1]}")


@action
async def replay_dead_letter(request: Request) -> Response:
    node = _node(request)
    async with node.store.transaction() as tx:
        replayed = await replay(tx, request.path_params["id"], node.clock.now())
    node.delivery.wake()
    return _done(request, f"Replaying to {replayed.dead_letter.subscription_name}", 202)


@action
async def advance_clock(request: Request) -> Response:
    node = _node(request)
    if node.virtual_clock is None:
        raise Conflict(
            "The clock is the system clock; start callgrid with --clock virtual to move it.", "ClockNotVirtual"
        )
    body = await read_object(request)
    raw = body.get("seconds")
    try:
        seconds = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidRequest("'seconds' must be a number >= 0: the clock does not go backwards.")
    if node.clock.now() + seconds > _LAST_TIMESTAMP:
        raise InvalidRequest("'seconds' would take the clock past the year 9999.")
    await node.advance_clock(seconds)
    return _done(request, f"Advanced {seconds:g} s")


def _softphones(request: Request) -> Softphones:
    softphones: Softphones = request.app.state.console_softphones
    return softphones


@action
async def softphone_call(request: Request) -> Response:
    """The browser calls as `from`: `{"from", "to", "sdp"}` (its offer) -> our answer and the call."""
    body = await read_object(request, limit=SDP_BODY_LIMIT)
    session, sdp = await _softphones(request).call(
        _text(body, "from") or "", _text(body, "to") or "", field(body, "sdp", str)
    )
    return _done(
        request,
        f"Calling {body['to']} from the browser",
        201,
        id=session.id,
        serverCallId=session.server_call_id,
        rawId=session.raw_id,
        type="answer",
        sdp=sdp,
    )


@action
async def softphone_register(request: Request) -> Response:
    """The browser waits to be rung as `as`: `{"as", "sdp"}` -> our answer; it then polls its state."""
    body = await read_object(request, limit=SDP_BODY_LIMIT)
    session, sdp = await _softphones(request).register(_text(body, "as") or "", field(body, "sdp", str))
    return _done(request, f"Waiting for calls to {session.raw_id}", 201, **session.view(), type="answer", sdp=sdp)


@data
async def softphone_status(request: Request) -> Response:
    softphones = _softphones(request)
    return JSONResponse(await softphones.status(softphones.get(request.path_params["id"])))


@action
async def softphone_answer(request: Request) -> Response:
    softphones = _softphones(request)
    session = softphones.get(request.path_params["id"])
    await softphones.act(session, DeviceBehaviour.ANSWER)
    return _done(request, f"Answered the call from {session.caller}")


@action
async def softphone_decline(request: Request) -> Response:
    softphones = _softphones(request)
    session = softphones.get(request.path_params["id"])
    await softphones.act(session, DeviceBehaviour.DECLINE)
    return _done(request, "Declined")


@action
async def softphone_dtmf(request: Request) -> Response:
    softphones = _softphones(request)
    session = softphones.get(request.path_params["id"])
    keys = _text(await read_object(request), "tones") or ""
    await softphones.dtmf(session, _tones(keys))
    return _done(request, f"Pressed {keys}")


@action
async def softphone_hang_up(request: Request) -> Response:
    softphones = _softphones(request)
    await softphones.hang_up(softphones.get(request.path_params["id"]))
    return _done(request, "Hung up")


def _router(request: Request) -> RouterLink:
    router: RouterLink = request.app.state.console_router
    return router


@action
async def attach_router(request: Request) -> Response:
    body = await read_object(request)
    url, key = _text(body, "url") or "", _text(body, "apiKey") or ""
    count = await _router(request).attach(url, key)
    return _done(request, f"Attached the router at {url.rstrip('/')} ({count} numbers assigned)")


@action
async def detach_router(request: Request) -> Response:
    await _router(request).detach()
    return _done(request, "Detached the router")
