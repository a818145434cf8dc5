"""Azure Resource Manager routes for Event Grid subscriptions, with ARM's paths, bodies and LRO headers.

ARM ids are case-insensitive; the scope of an extension subscription must be this server's
Communication resource.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callgrid.api.auth import arm_bearer, node_of
from callgrid.api.errors import error_response, read_json
from callgrid.errors import NotFound
from callgrid.eventgrid.subscriptions import API_VERSION, EXTENSION_TYPE, public_view

_EXTENSION = re.compile(
    r"^(?P<scope>/subscriptions/.+?)/providers/Microsoft\.EventGrid/eventSubscriptions"
    r"(?:/(?P<name>[^/]+))?(?P<action>/getFullUrl)?$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.EventGrid/locations/[^/]+/operationsStatus/(?P<op>[^/]+)$",
    re.IGNORECASE,
)


def _operation_url(request: Request, doc: dict[str, Any]) -> str:
    node = node_of(request)
    return (
        f"{node.settings.endpoint}/subscriptions/{node.resource.subscription_id}/providers/Microsoft.EventGrid"
        f"/locations/global/operationsStatus/{doc['callgrid']['operationId']}?api-version={API_VERSION}"
    )


@arm_bearer
async def dispatch(request: Request) -> Response:
    if not request.query_params.get("api-version"):
        return error_response(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    path = request.url.path.rstrip("/")
    operation = _OPERATION.match(path)
    if operation and request.method == "GET":
        return await _operation_status(request, operation["op"])
    match = _EXTENSION.match(path)
    if match is None:
        return error_response(
            404, "ResourceNotFound", f"callgrid serves no Azure Resource Manager resource at '{path}'."
        )
    node = node_of(request)
    scope = match["scope"]
    if scope.lower() != node.resource.arm_id.lower():
        return error_response(
            404,
            "ResourceNotFound",
            f"The Resource '{scope}' was not found. This server's Communication resource is '{node.resource.arm_id}'.",
        )
    name = match["name"]
    if name is None:
        if request.method != "GET":
            return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection.")
        async with node.store.transaction() as tx:
            docs = await node.subscriptions.list(tx, node.resource.arm_id + "/providers/")
        return JSONResponse({"value": [public_view(d) for d in docs]})
    arm_id = f"{node.resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}"
    if match["action"]:
        if request.method != "POST":
            return error_response(405, "MethodNotAllowed", "getFullUrl is a POST action.")
        async with node.store.transaction() as tx:
            doc = await node.subscriptions.get(tx, arm_id)
        return JSONResponse({"endpointUrl": doc["properties"]["destination"]["properties"]["endpointUrl"]})
    if request.method == "PUT":
        body = await read_json(request)
        async with node.store.transaction() as tx:
            doc, created = await node.subscriptions.put(
                tx,
                arm_id=arm_id,
                name=name,
                topic=node.resource.arm_id,
                resource_type=EXTENSION_TYPE,
                body=body,
            )
        node.subscriptions_changed()
        return JSONResponse(
            public_view(doc),
            status_code=201 if created else 200,
            headers={"Azure-AsyncOperation": _operation_url(request, doc)},
        )
    if request.method == "GET":
        async with node.store.transaction() as tx:
            doc = await node.subscriptions.get(tx, arm_id)
        return JSONResponse(public_view(doc))
    if request.method == "DELETE":
        async with node.store.transaction() as tx:
            deleted = await node.subscriptions.delete(tx, arm_id)
        node.subscriptions_changed()
        return Response(status_code=200 if deleted else 204)
    return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on an event subscription.")


async def _operation_status(request: Request, operation_id: str) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        doc = await node.subscriptions.find_operation(tx, operation_id)
    if doc is None:
        raise NotFound(f"Operation '{operation_id}' was not found.", code="OperationNotFound")
    private = doc["callgrid"]
    body: dict[str, Any] = {"id": operation_id, "name": operation_id, "status": private["operationStatus"]}
    if private["operationStatus"] == "Failed":
        body["error"] = {"code": "Url validation", "message": private["error"]}
    return JSONResponse(body)


async def validate_url(request: Request) -> Response:
    """GET on a validationUrl (manual validation); unauthenticated, like Azure's."""
    node = node_of(request)
    sub_id = request.query_params.get("id", "")
    token = request.query_params.get("token", "")
    name = await node.validator.validate_manually(sub_id, token)
    return JSONResponse({"message": f"Event subscription '{name}' validated."})


routes = [
    Route("/subscriptions/{path:path}", dispatch, methods=["GET", "PUT", "DELETE", "POST", "PATCH"]),
    Route("/eventsubscriptions/{name}/validate", validate_url, methods=["GET"]),
]
