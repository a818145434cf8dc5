"""`/callgrid/v1/faults`: add, list and remove injected faults; and the Call Automation operations they fail."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from callgrid.api.auth import hmac_signed, node_of, require_default_resource
from callgrid.api.errors import error_response, read_object
from callgrid.api.responses import JSONResponse
from callgrid.faults import operation_of


@hmac_signed
async def add_fault(request: Request) -> Response:
    require_default_resource(request, "inject faults")
    fault = node_of(request).faults.add(await read_object(request))
    return JSONResponse(fault.to_wire(), status_code=201)


@hmac_signed
async def list_faults(request: Request) -> Response:
    return JSONResponse({"value": [f.to_wire() for f in node_of(request).faults.list()]})


@hmac_signed
async def remove_fault(request: Request) -> Response:
    require_default_resource(request, "remove faults")
    node_of(request).faults.remove(request.path_params["faultId"])
    return Response(status_code=204)


@hmac_signed
async def remove_all_faults(request: Request) -> Response:
    require_default_resource(request, "remove faults")
    node_of(request).faults.clear()
    return Response(status_code=204)


class OperationFaults:
    """Answers a Call Automation request with an injected operation fault's error, before the route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/calling/"):
            faults = scope["app"].state.node.faults
            name = operation_of(scope["method"], scope["path"]) if faults.list() else None
            fault = faults.take("operation", name) if name is not None else None
            if fault is not None:
                assert fault.status is not None and fault.code is not None and fault.message is not None
                await error_response(fault.status, fault.code, fault.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


routes = [
    Route("/callgrid/v1/faults", add_fault, methods=["POST"]),
    Route("/callgrid/v1/faults", list_faults, methods=["GET"]),
    Route("/callgrid/v1/faults", remove_all_faults, methods=["DELETE"]),
    Route("/callgrid/v1/faults/{faultId}", remove_fault, methods=["DELETE"]),
]
