"""Phone Numbers API routes: the purchased numbers the resource owns."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of
from callgrid.errors import InvalidRequest

_MAX_INT = 2**31 - 1


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # isascii: int() also reads fullwidth and other Unicode digits.
    digits = raw.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10 or int(digits) > _MAX_INT:
        raise InvalidRequest(f"Query parameter '{name}' must be an integer from 0 to {_MAX_INT}.")
    return int(digits)


@hmac_signed
async def list_purchased(request: Request) -> Response:
    node = node_of(request)
    skip = _int_param(request, "skip", 0)
    top = _int_param(request, "top", 100)
    async with node.store.transaction() as tx:
        page, more = await node.numbers.list(tx, skip, top)
    body: dict[str, object] = {"phoneNumbers": page}
    if more:
        # Relative is fine: the SDK resolves it against the endpoint and re-appends api-version.
        body["nextLink"] = f"/phoneNumbers?skip={skip + top}&top={top}"
    return JSONResponse(body)


@hmac_signed
async def get_purchased(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        doc = await node.numbers.get(tx, request.path_params["number"])
    return JSONResponse(doc)


routes = [
    Route("/phoneNumbers", list_purchased, methods=["GET"]),
    Route("/phoneNumbers/{number}", get_purchased, methods=["GET"]),
]
