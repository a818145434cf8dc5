"""Call Automation callbacks to the router: accepted only with a valid ACS-signed JWT, recorded once each."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callgrid.router.callback_auth import InvalidCallbackToken
from callgrid.router.web import BadRequest, error, read_json, state_of


async def post(request: Request) -> Response:
    state = state_of(request)
    try:
        await state.verifier.averify(request.headers.get("authorization"))
        body = await read_json(request)
    except InvalidCallbackToken as exc:
        return error(401, "Unauthorized", str(exc))
    except BadRequest as exc:
        return error(exc.status, exc.code, exc.message)
    events = body if isinstance(body, list) else [body]
    recorded = 0
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            return error(400, "BadRequest", "expected CloudEvents with ids.")
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        recorded += state.store.record_callback(
            event["id"],
            str(event.get("type", "")),
            data.get("callConnectionId"),
            data.get("correlationId"),
            json.dumps(event),
        )
    return JSONResponse({"recorded": recorded})
