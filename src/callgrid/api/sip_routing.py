"""Direct Routing's SIP configuration routes, as `SipRoutingClient` (azure-communication-phonenumbers,
`siprouting`) calls them: `GET /sip` and `PATCH /sip` (merge-patch) at api-version 2023-03-01."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of
from callgrid.api.errors import read_json
from callgrid.api.responses import JSONResponse
from callgrid.platform import sip_routing


@hmac_signed
async def get_configuration(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        config = await sip_routing.get(tx)
    return JSONResponse(sip_routing.wire(config))


@hmac_signed
async def update_configuration(request: Request) -> Response:
    node = node_of(request)
    patch = await read_json(request, allow_empty=True)
    async with node.store.transaction() as tx:
        config = await sip_routing.update(tx, patch)
    return JSONResponse(sip_routing.wire(config))


routes = [
    Route("/sip", get_configuration, methods=["GET"]),
    Route("/sip", update_configuration, methods=["PATCH"]),
]
