"""The Event Grid webhook: both validation handshakes, then IncomingCall events, acknowledged once durable.

Protection against forged or replayed requests: the endpoint URL carries a secret query parameter
(`?secret=`, the Event Grid docs' suggestion for webhooks), checked in constant time on every request,
handshakes included; a replay of a genuine event is a duplicate by event id and is never acted on twice;
and an invented event cannot do harm, because only ACS can mint an `incomingCallContext` that its
redirect and reject accept.

Deliveries (POST) are served straight from ASGI by `post_asgi`, ahead of Starlette (app.py): one per
routed call, and Starlette's middleware, routing, Request and JSONResponse cost more than the answer itself.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from callgrid.router.events import BadDelivery, parse_delivery
from callgrid.router.web import MAX_BODY, RouterState, dumps, error, error_body, loads, same, state_of

log = logging.getLogger("callgrid.router.webhook")
_JSON = (b"content-type", b"application/json")


def _authorised(request: Request) -> bool:
    return same(request.query_params.get("secret"), state_of(request).webhook_secret)


async def options(request: Request) -> Response:
    """CloudEvents abuse protection: consent to the origin that asks (the secret proves it is our subscription)."""
    if not _authorised(request):
        return error(401, "Unauthorized", "the webhook secret is missing or wrong.")
    origin = request.headers.get("webhook-request-origin")
    if not origin:
        return error(400, "BadRequest", "an OPTIONS handshake needs a WebHook-Request-Origin header.")
    headers = {"WebHook-Allowed-Origin": origin, "Allow": "POST, OPTIONS"}
    if request.headers.get("webhook-request-rate"):
        headers["WebHook-Allowed-Rate"] = "*"
    return Response(status_code=200, headers=headers)


def deliver(state: RouterState, secret: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
    """A delivery's answer (status and JSON body): the handshake's code, or the events accepted."""
    if not same(secret, state.webhook_secret):
        return 401, error_body("Unauthorized", "the webhook secret is missing or wrong.")
    if len(raw) > MAX_BODY:
        return 413, error_body("PayloadTooLarge", f"the body is larger than {MAX_BODY} bytes.")
    try:
        document = loads(raw)
    except ValueError:
        return 400, error_body("BadRequest", "the body is not JSON.")
    try:
        delivery = parse_delivery(document)
    except BadDelivery as exc:
        return 400, error_body("BadRequest", str(exc))
    if delivery.validation_code is not None:
        return 200, {"validationResponse": delivery.validation_code}
    for problem in delivery.malformed:
        log.warning("ignored: %s", problem)
    fresh, accepted_at = state.store.accept(delivery.calls) if delivery.calls else ([], 0.0)
    # Acknowledge now that the events are durable; act right after (a crash in between is resumed at start).
    router = state.router
    if router is not None:
        for call in fresh:
            router.submit(call, accepted_at)
    return 200, {
        "accepted": len(fresh),
        "duplicates": len(delivery.calls) - len(fresh),
        "ignored": delivery.ignored,
        "malformed": delivery.malformed,
    }


async def post(request: Request) -> Response:
    """The same answer through Starlette (its route keeps the path's 405 for other methods)."""
    status, body = deliver(state_of(request), request.query_params.get("secret"), await request.body())
    return Response(dumps(body), status_code=status, media_type="application/json")


async def post_asgi(state: RouterState, scope: Scope, receive: Receive, send: Send) -> None:
    """`post` without Starlette: the body read as Request.body reads it, the answer sent as JSONResponse sends it.
    A request without the secret, or whose body passes the limit, is answered before more of it is read."""
    # Starlette's query_params: the last value of a repeated key wins.
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    secret = query.get("secret")
    chunks: list[bytes] = []
    size = 0
    raw = b""
    if same(secret, state.webhook_secret):
        while size <= MAX_BODY:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client has gone: nothing to answer
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
    status, body = deliver(state, secret, raw)
    payload = dumps(body)
    headers = [(b"content-length", str(len(payload)).encode("latin-1")), _JSON]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
