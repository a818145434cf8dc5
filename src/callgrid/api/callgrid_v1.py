"""callgrid's own routes (`/callgrid/v1/...`): the simulator side of the world, signed like ACS routes."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid import __version__
from callgrid.api.auth import hmac_signed, node_of, require_default_resource, resource_of
from callgrid.api.deliveries import query_limit
from callgrid.api.errors import error_response, field, read_object
from callgrid.api.openapi import OPENAPI
from callgrid.api.responses import JSONResponse
from callgrid.errors import InvalidRequest, NotFound
from callgrid.platform.calls import Call, DeviceBehaviour
from callgrid.platform.calls.service import parse_identifier


def call_view(call: Call) -> dict[str, Any]:
    return {
        "serverCallId": call.server_call_id,
        "correlationId": call.correlation_id,
        "state": call.state,
        "source": call.source,
        "createdAt": call.created_at,
        "endedAt": call.ended_at,
        "endReason": call.end_reason,
        "participants": [
            {
                "rawId": p.raw_id,
                "role": p.role,
                "joinedAt": p.joined_at,
                "callConnectionId": p.call_connection_id,
            }
            for p in call.participants
        ],
        "offers": [
            {
                "target": o.target,
                "from": o.source,
                "scenario": o.scenario,
                "state": o.state,
                "outcome": o.outcome,
                "incomingCallEventId": o.incoming_call_event_id,
                "expiresAt": o.expires_at,
            }
            for o in call.offers
        ],
        "callConnections": [
            {"callConnectionId": c.call_connection_id, "state": c.state, "answeredFor": c.answered_for}
            for c in call.connections
        ],
        "timeline": [{"time": t.time, "event": t.event, **t.detail} for t in call.timeline],
    }


@hmac_signed
async def own_number(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    number = field(body, "phoneNumber", str)
    async with node.store.transaction() as tx:
        doc = await node.numbers.own(tx, resource_of(request), number)
    return JSONResponse(doc, status_code=201)


@hmac_signed
async def list_numbers(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        page, _ = await node.numbers.list(tx, resource_of(request), 0, 1000)
    return JSONResponse({"phoneNumbers": page})


@hmac_signed
async def release_number(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.numbers.release(tx, resource_of(request), request.path_params["phoneNumber"])
    return Response(status_code=204)


@hmac_signed
async def place_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    source = parse_identifier(body.get("from"), "from")
    target = parse_identifier(body.get("to"), "to")
    display_name = field(body, "callerDisplayName", str, required=False) or ""
    custom_context = field(body, "customContext", dict, required=False)
    async with node.store.transaction() as tx:
        call = await node.calls.place_call(
            tx,
            resource_of(request),
            source=source,
            target=target,
            caller_display_name=display_name,
            custom_context=custom_context,
        )
    return JSONResponse(
        {"serverCallId": call.server_call_id, "correlationId": call.correlation_id, "state": call.state},
        status_code=201,
    )


@hmac_signed
async def get_call(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        call = await node.calls.get_call(tx, request.path_params["serverCallId"], resource_of(request))
    return JSONResponse(call_view(call))


@hmac_signed
async def list_calls(request: Request) -> Response:
    node = node_of(request)
    limit = query_limit(request)
    async with node.store.transaction() as tx:
        calls = await node.calls.list_calls(tx, limit, resource=resource_of(request))
    return JSONResponse({"value": [call_view(c) for c in calls]})


@hmac_signed
async def list_identities(request: Request) -> Response:
    node = node_of(request)
    limit = query_limit(request)
    async with node.store.transaction() as tx:
        identities = await node.identities.list_identities(tx, resource_of(request), limit)
    return JSONResponse({"value": identities})


@hmac_signed
async def list_endpoints(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        devices = await node.calls.list_devices(tx, resource_of(request))
    return JSONResponse({"value": devices})


@hmac_signed
async def put_endpoint(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    target = parse_identifier(request.path_params["rawId"], "rawId")
    behaviour_raw = field(body, "onIncomingCall", str, required=False) or DeviceBehaviour.RING.value
    try:
        behaviour = DeviceBehaviour(behaviour_raw)
    except ValueError:
        raise InvalidRequest(f"onIncomingCall must be one of {', '.join(b.value for b in DeviceBehaviour)}.") from None
    delay = field(body, "answerDelayMs", int, required=False) or 0
    connect_delay = field(body, "connectDelayMs", int, required=False) or 0
    async with node.store.transaction() as tx:
        doc = await node.calls.set_device(tx, resource_of(request), target, behaviour, delay, connect_delay)
    return JSONResponse(doc)


@hmac_signed
async def get_endpoint(request: Request) -> Response:
    node = node_of(request)
    target = parse_identifier(request.path_params["rawId"], "rawId")
    if target.is_communication_user and not resource_of(request).owns_user(target.raw_id):
        raise NotFound(f"Identity '{target.raw_id}' does not exist in this resource.", code="8522")
    async with node.store.transaction() as tx:
        doc = await node.calls.get_device(tx, target.raw_id)
    return JSONResponse(doc)


@hmac_signed
async def reset(request: Request) -> Response:
    require_default_resource(request, "reset the server")
    await node_of(request).reset()
    return Response(status_code=204)


# ---- Communication resources (platform/resource.py): managed with the default resource's key ----------


@hmac_signed
async def list_resources(request: Request) -> Response:
    require_default_resource(request, "list the server's resources")
    node = node_of(request)
    await node.sync_resources()
    return JSONResponse({"value": [r.view(node.settings.endpoint) for r in node.resources]})


@hmac_signed
async def create_resource(request: Request) -> Response:
    require_default_resource(request, "create resources")
    node = node_of(request)
    body = await read_object(request)
    name = field(body, "name", str)
    subscription_id = field(body, "subscriptionId", str, required=False)
    resource_group = field(body, "resourceGroup", str, required=False)
    resource = await node.create_resource(name, subscription_id=subscription_id, resource_group=resource_group)
    return JSONResponse(resource.view(node.settings.endpoint, with_keys=True), status_code=201)


@hmac_signed
async def get_resource(request: Request) -> Response:
    require_default_resource(request, "read the server's resources")
    node = node_of(request)
    await node.sync_resources()
    resource = node.resources.get(request.path_params["name"])
    return JSONResponse(resource.view(node.settings.endpoint, with_keys=True))


@hmac_signed
async def delete_resource(request: Request) -> Response:
    require_default_resource(request, "delete resources")
    await node_of(request).delete_resource(request.path_params["name"])
    return Response(status_code=204)


@hmac_signed
async def regenerate_key(request: Request) -> Response:
    require_default_resource(request, "regenerate keys")
    node = node_of(request)
    body = await read_object(request)
    key_type = field(body, "keyType", str)
    async with node.store.transaction() as tx:
        resource = await node.resources.regenerate_key(tx, request.path_params["name"], key_type.lower())
    return JSONResponse(resource.view(node.settings.endpoint, with_keys=True))


async def resource_action(request: Request) -> Response:
    if request.path_params["action"] != "regenerateKey":
        return error_response(404, "NotFound", f"No route for {request.method} {request.url.path}.")
    return await regenerate_key(request)


@hmac_signed
async def get_clock(request: Request) -> Response:
    node = node_of(request)
    return JSONResponse({"now": node.clock.now(), "virtual": node.virtual_clock is not None})


_LAST_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z
_MAX_PATIENCE_SECONDS = 600


@hmac_signed
async def advance_clock(request: Request) -> Response:
    node = node_of(request)
    if node.virtual_clock is None:
        return error_response(
            409,
            "ClockNotVirtual",
            "The clock is the system clock; start callgrid with --clock virtual to move it.",
        )
    body = await read_object(request)
    seconds = field(body, "seconds", (int, float))
    if seconds < 0:
        raise InvalidRequest("seconds must be >= 0: the clock does not go backwards.")
    if not math.isfinite(seconds) or node.clock.now() + seconds > _LAST_TIMESTAMP:
        # Times are written as ISO dates: a clock past 9999-12-31 could not be told (found by fuzzing).
        raise InvalidRequest("seconds would take the clock past the year 9999.")
    patience = field(body, "patienceSeconds", (int, float), required=False)
    if patience is not None and not 0 <= patience <= _MAX_PATIENCE_SECONDS:
        raise InvalidRequest(f"patienceSeconds must be between 0 and {_MAX_PATIENCE_SECONDS}.")
    now = await node.advance_clock(float(seconds), patience=None if patience is None else float(patience))
    return JSONResponse({"now": now, "virtual": True})


async def health(request: Request) -> Response:
    """Unsigned, for probes and scripts waiting for the server: it is up and its store answers."""
    node = node_of(request)
    async with node.store.transaction() as tx:
        await tx.get_meta("clock.virtualNow")
    clock = "virtual" if node.virtual_clock is not None else "system"
    return JSONResponse({"status": "ok", "version": __version__, "clock": clock, "now": node.clock.now()})


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


routes = [
    Route("/callgrid/v1/openapi.json", openapi, methods=["GET"]),
    Route("/callgrid/v1/health", health, methods=["GET"]),
    Route("/callgrid/v1/phoneNumbers", own_number, methods=["POST"]),
    Route("/callgrid/v1/phoneNumbers", list_numbers, methods=["GET"]),
    Route("/callgrid/v1/phoneNumbers/{phoneNumber}", release_number, methods=["DELETE"]),
    Route("/callgrid/v1/calls", place_call, methods=["POST"]),
    Route("/callgrid/v1/calls", list_calls, methods=["GET"]),
    Route("/callgrid/v1/calls/{serverCallId}", get_call, methods=["GET"]),
    Route("/callgrid/v1/identities", list_identities, methods=["GET"]),
    Route("/callgrid/v1/endpoints", list_endpoints, methods=["GET"]),
    Route("/callgrid/v1/endpoints/{rawId}", put_endpoint, methods=["PUT"]),
    Route("/callgrid/v1/endpoints/{rawId}", get_endpoint, methods=["GET"]),
    Route("/callgrid/v1/reset", reset, methods=["POST"]),
    Route("/callgrid/v1/resources", list_resources, methods=["GET"]),
    Route("/callgrid/v1/resources", create_resource, methods=["POST"]),
    Route("/callgrid/v1/resources/{name}:{action}", resource_action, methods=["POST"]),
    Route("/callgrid/v1/resources/{name}", get_resource, methods=["GET"]),
    Route("/callgrid/v1/resources/{name}", delete_resource, methods=["DELETE"]),
    Route("/callgrid/v1/clock", get_clock, methods=["GET"]),
    Route("/callgrid/v1/clock:advance", advance_clock, methods=["POST"]),
]
