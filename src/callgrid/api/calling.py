"""Call Automation routes (what `CallAutomationClient` and `CallConnectionClient` call)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of
from callgrid.api.errors import error_response, field, read_object
from callgrid.errors import InvalidRequest
from callgrid.identifiers import CommunicationIdentifier, InvalidIdentifier, from_wire
from callgrid.security import jwks

MAX_OPERATION_CONTEXT = 5000


def _identifier(body: dict[str, Any], name: str) -> CommunicationIdentifier:
    if body.get(name) is None:
        raise InvalidRequest(f"'{name}' is required.", code="8523")
    try:
        return from_wire(body[name], name)
    except InvalidIdentifier as exc:
        raise InvalidRequest(str(exc), code="8523") from None


def _operation_context(body: dict[str, Any]) -> str | None:
    value = field(body, "operationContext", str, required=False)
    if value is not None and len(value) > MAX_OPERATION_CONTEXT:
        raise InvalidRequest(f"operationContext is longer than {MAX_OPERATION_CONTEXT} characters.", code="8523")
    return value  # type: ignore[no-any-return]


@hmac_signed
async def answer_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    callback_uri = field(body, "callbackUri", str)
    operation_context = _operation_context(body)
    async with node.store.transaction() as tx:
        call, connection = await node.calls.answer(
            tx, incoming_call_context=context, callback_uri=callback_uri, operation_context=operation_context
        )
    # The answer reports the leg as it is at that moment; CallConnected follows on the callback URI.
    return JSONResponse(node.calls.connection_properties(call, connection, state="connecting"))


@hmac_signed
async def redirect_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    target = _identifier(body, "target")
    async with node.store.transaction() as tx:
        await node.calls.redirect(tx, incoming_call_context=context, target=target)
    return Response(status_code=204)


@hmac_signed
async def reject_call(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    context = field(body, "incomingCallContext", str)
    reason = field(body, "callRejectReason", str, required=False)
    async with node.store.transaction() as tx:
        await node.calls.reject(tx, incoming_call_context=context, reason=reason)
    return Response(status_code=204)


@hmac_signed
async def get_call_connection(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        call, connection = await node.calls.connection(tx, request.path_params["ccid"])
    return JSONResponse(node.calls.connection_properties(call, connection))


@hmac_signed
async def hang_up(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.calls.hang_up(tx, request.path_params["ccid"], for_everyone=False)
    return Response(status_code=204)


@hmac_signed
async def terminate(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.calls.hang_up(tx, request.path_params["ccid"], for_everyone=True)
    return Response(status_code=204)


@hmac_signed
async def not_yet_served(request: Request) -> Response:
    return error_response(
        501,
        "NotImplemented",
        f"callgrid does not serve {request.method} {request.url.path} yet (Call Automation, complete).",
    )


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
    Route("/calling/callConnections:connect", not_yet_served, methods=["POST"]),
    Route("/calling/callConnections", not_yet_served, methods=["POST"]),
    # Action routes before the plain one: "{ccid}" would otherwise swallow ":terminate".
    Route("/calling/callConnections/{ccid}:terminate", terminate, methods=["POST"]),
    Route("/calling/callConnections/{ccid}:{action}", not_yet_served, methods=["POST"]),
    Route("/calling/callConnections/{ccid}/participants{rest:path}", not_yet_served, methods=["GET", "POST"]),
    Route("/calling/callConnections/{ccid}", get_call_connection, methods=["GET"]),
    Route("/calling/callConnections/{ccid}", hang_up, methods=["DELETE"]),
    Route("/calling/recordings{rest:path}", not_yet_served, methods=["GET", "POST", "DELETE"]),
]
