"""The Event Grid webhook: both validation handshakes, then IncomingCall events, acknowledged once durable.

Protection against forged or replayed requests: the endpoint URL carries a secret query parameter
(`?secret=`, the Event Grid docs' suggestion for webhooks), checked in constant time on every request,
handshakes included; a replay of a genuine event is a duplicate by event id and is never acted on twice;
and an invented event cannot do harm, because only ACS can mint an `incomingCallContext` that its
redirect and reject accept.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callgrid.router.events import BadDelivery, parse_delivery
from callgrid.router.web import BadRequest, error, read_json, same, state_of

log = logging.getLogger("callgrid.router.webhook")


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


async def post(request: Request) -> Response:
    if not _authorised(request):
        return error(401, "Unauthorized", "the webhook secret is missing or wrong.")
    state = state_of(request)
    try:
        delivery = parse_delivery(await read_json(request))
    except BadRequest as exc:
        return error(exc.status, exc.code, exc.message)
    except BadDelivery as exc:
        return error(400, "BadRequest", str(exc))
    if delivery.validation_code is not None:
        return JSONResponse({"validationResponse": delivery.validation_code})
    for problem in delivery.malformed:
        log.warning("ignored: %s", problem)
    fresh, accepted_at = state.store.accept(delivery.calls) if delivery.calls else ([], 0.0)
    # Acknowledge now that the events are durable; act right after (a crash in between is resumed at start).
    router = state.router
    if router is not None:
        for call in fresh:
            router.submit(call, accepted_at)
    return JSONResponse(
        {
            "accepted": len(fresh),
            "duplicates": len(delivery.calls) - len(fresh),
            "ignored": delivery.ignored,
            "malformed": delivery.malformed,
        }
    )
