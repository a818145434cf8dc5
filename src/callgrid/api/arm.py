"""Azure Resource Manager routes for Event Grid: event subscriptions (extension resources on the
Communication resource, and children of system topics and custom topics), system topics and custom
topics, with ARM's paths, bodies, status codes and LRO headers as azure-mgmt-eventgrid 10.x expects
them (PUT/PATCH of a subscription: 201 + Azure-AsyncOperation, polled until the handshake ends).

ARM ids are case-insensitive. Subscription and resource-group segments are free-form for topics,
as in Azure; an extension subscription's scope is one of this server's Communication resources or a
custom topic.

A token's principal owns one Communication resource (api/auth.py): it reaches that resource's extension
subscriptions and system topic, never another resource's (403 AuthorizationFailed, as ARM answers a
principal without a role on the scope). Custom topics are not any resource's: every principal reaches them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import arm_bearer, node_of, resource_of
from callgrid.api.body import ARM_BODY_LIMIT
from callgrid.api.errors import error_response, read_json
from callgrid.api.responses import JSONResponse
from callgrid.errors import NotFound
from callgrid.eventgrid.custom_topics import CUSTOM, SYSTEM, public_topic
from callgrid.eventgrid.subscriptions import (
    API_VERSION,
    EVENT_GRID_SCHEMA,
    EXTENSION_TYPE,
    SYSTEM_TOPIC_TYPE,
    TOPIC_TYPE,
    public_view,
)
from callgrid.platform.resource import CommunicationResource

_EXTENSION = re.compile(
    r"^(?P<scope>/subscriptions/.+?)/providers/Microsoft\.EventGrid/eventSubscriptions"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<action>getFullUrl|getDeliveryAttributes))?$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.EventGrid/locations/[^/]+/operationsStatus/(?P<op>[^/]+)$",
    re.IGNORECASE,
)
_TOPIC_COLLECTION = re.compile(
    r"^(?P<scope>/subscriptions/[^/]+(?:/resourceGroups/[^/]+)?)/providers/Microsoft\.EventGrid/"
    r"(?P<kind>topics|systemTopics)$",
    re.IGNORECASE,
)
_TOPIC = re.compile(
    r"^(?P<topic>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.EventGrid/"
    r"(?P<kind>topics|systemTopics)/(?P<name>[^/]+))"
    r"(?:/(?P<action>listKeys|regenerateKey)|/(?P<subs>eventSubscriptions)(?:/(?P<sub>[^/]+))?"
    r"(?:/(?P<sub_action>getFullUrl|getDeliveryAttributes))?)?$",
    re.IGNORECASE,
)
# Completed synchronous operations still get an operation URL (the SDK polls it); their ids say so.
_DONE = "done-"
# How soon the SDK should poll again: handshakes with local endpoints take milliseconds.
_POLL_HEADERS = {"Retry-After-Ms": "200"}


@dataclass(frozen=True)
class _Parent:
    """What an event subscription hangs under."""

    topic: str  # shown as properties.topic
    source: str  # whose events it receives
    input_schema: str
    resource_type: str
    collection: str  # the subscription ids' common prefix, ending in "/"


def _operation_url(request: Request, operation_id: str) -> str:
    node = node_of(request)
    return (
        f"{node.settings.endpoint}/subscriptions/{node.resource.subscription_id}/providers/Microsoft.EventGrid"
        f"/locations/global/operationsStatus/{operation_id}?api-version={API_VERSION}"
    )


def _lro(request: Request, operation_id: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": _operation_url(request, operation_id), **_POLL_HEADERS}


def _done(request: Request) -> dict[str, str]:
    return _lro(request, _DONE + str(uuid.uuid4()))


async def _read_json(request: Request) -> Any:
    return await read_json(request, code="InvalidRequestContent", limit=ARM_BODY_LIMIT)


def _not_found(path: str) -> Response:
    return error_response(404, "ResourceNotFound", f"callgrid serves no Azure Resource Manager resource at '{path}'.")


def _forbidden(request: Request, scope: str) -> Response:
    principal = resource_of(request)
    return error_response(
        403,
        "AuthorizationFailed",
        f"The client '{principal.arm_subject}' does not have authorization to perform action "
        f"'{request.method}' over scope '{scope}': its token is for the Communication resource "
        f"'{principal.name}'. Use the ARM token `callgrid env --resource NAME` prints for that resource.",
    )


def _allowed(request: Request, resource: CommunicationResource | None) -> bool:
    return resource is None or resource.immutable_id == resource_of(request).immutable_id


def _system_topic_resource(request: Request, doc: dict[str, Any]) -> CommunicationResource | None:
    """The Communication resource a stored system topic is of (None: none on this server any more)."""
    return node_of(request).resources.by_arm_id(str(doc["properties"].get("source", "")))


def _method_not_allowed(request: Request, what: str) -> Response:
    return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {what}.")


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
    extension = _EXTENSION.match(path)
    if extension:
        return await _extension(request, extension)
    collection = _TOPIC_COLLECTION.match(path)
    if collection:
        if request.method != "GET":
            return _method_not_allowed(request, "a collection")
        kind = CUSTOM if collection["kind"].lower() == "topics" else SYSTEM
        node = node_of(request)
        async with node.store.transaction() as tx:
            docs = await node.topics.list_in(tx, kind, collection["scope"] + "/")
        if kind == SYSTEM:
            # Only the system topics of the caller's own resource are visible to it.
            docs = [d for d in docs if _allowed(request, _system_topic_resource(request, d))]
        return JSONResponse({"value": [public_topic(d) for d in docs]})
    topic = _TOPIC.match(path)
    if topic:
        return await _topic(request, topic)
    return _not_found(path)


async def _extension(request: Request, match: re.Match[str]) -> Response:
    node = node_of(request)
    scope = match["scope"]
    if _TOPIC.match(scope) and "/providers/microsoft.eventgrid/topics/" in scope.lower():
        # An extension subscription on a custom topic: the same subscription as a child one, at another path.
        async with node.store.transaction() as tx:
            topic = await node.topics.get(tx, scope, CUSTOM)
        parent = _Parent(
            topic=topic["id"],
            source=topic["id"],
            input_schema=topic["properties"]["inputSchema"],
            resource_type=EXTENSION_TYPE,
            collection=f"{topic['id']}/providers/Microsoft.EventGrid/eventSubscriptions/",
        )
        return await _subscription(request, parent, match["name"], match["action"])
    resource = node.resources.by_arm_id(scope)
    if resource is None and await node.sync_resources():  # made on another node?
        resource = node.resources.by_arm_id(scope)
    if resource is None:
        return error_response(
            404,
            "ResourceNotFound",
            f"The Resource '{scope}' was not found. Extension event subscriptions are served on this server's "
            f"Communication resources (the default: '{node.resource.arm_id}'; `callgrid resources list`) and on "
            "custom topics.",
        )
    if not _allowed(request, resource):
        return _forbidden(request, scope)
    parent = _Parent(
        topic=resource.arm_id,
        source=resource.topic,
        input_schema=EVENT_GRID_SCHEMA,
        resource_type=EXTENSION_TYPE,
        collection=f"{resource.arm_id}/providers/Microsoft.EventGrid/eventSubscriptions/",
    )
    return await _subscription(request, parent, match["name"], match["action"])


async def _topic(request: Request, match: re.Match[str]) -> Response:
    node = node_of(request)
    kind = CUSTOM if match["kind"].lower() == "topics" else SYSTEM
    topic_id = match["topic"]
    name = match["name"]
    if kind == SYSTEM and (request.method != "PUT" or match["subs"]):
        # A system topic, and its subscriptions, are its resource's owner's only.
        async with node.store.transaction() as tx:
            stored = await tx.get_topic(topic_id.lower())
        if stored is not None and not _allowed(request, _system_topic_resource(request, stored)):
            return _forbidden(request, topic_id)
    if match["subs"]:
        async with node.store.transaction() as tx:
            doc = await node.topics.get(tx, topic_id, kind)
        if kind == CUSTOM:
            parent = _Parent(
                topic=doc["id"],
                source=doc["id"],
                input_schema=doc["properties"]["inputSchema"],
                resource_type=TOPIC_TYPE,
                collection=f"{doc['id']}/eventSubscriptions/",
            )
        else:
            parent = _Parent(
                topic=doc["id"],
                source=doc["properties"]["source"],
                input_schema=EVENT_GRID_SCHEMA,
                resource_type=SYSTEM_TOPIC_TYPE,
                collection=f"{doc['id']}/eventSubscriptions/",
            )
        return await _subscription(request, parent, match["sub"], match["sub_action"])
    action = (match["action"] or "").lower()
    if action:
        if kind != CUSTOM or request.method != "POST":
            return _method_not_allowed(request, f"'{match['action']}'")
        async with node.store.transaction() as tx:
            if action == "listkeys":
                keys = node.topics.keys(await node.topics.get(tx, topic_id))
            else:
                keys = await node.topics.regenerate_key(tx, topic_id, await _read_json(request))
        return JSONResponse(keys)
    if request.method == "PUT":
        body = await _read_json(request)
        source = body.get("properties", {}).get("source") if isinstance(body, dict) else None
        named = node.resources.by_arm_id(source) if isinstance(source, str) else None
        if named is None and isinstance(source, str) and await node.sync_resources():  # made on another node?
            named = node.resources.by_arm_id(source)
        # A source that is none of this server's resources is the caller's own resource's error to report.
        owner = named or resource_of(request)
        if kind == SYSTEM and not _allowed(request, owner):
            return _forbidden(request, str(source))
        async with node.store.transaction() as tx:
            if kind == CUSTOM:
                doc, created = await node.topics.put_topic(tx, arm_id=topic_id, name=name, body=body)
            else:
                existing = await tx.get_topic(topic_id.lower())
                if existing is not None and not _allowed(request, _system_topic_resource(request, existing)):
                    return _forbidden(request, topic_id)
                doc, created = await node.topics.put_system_topic(
                    tx, arm_id=topic_id, name=name, body=body, resource_id=owner.arm_id
                )
        # The SDK takes only 201 for a custom topic's PUT, 200 or 201 for a system topic's.
        status = 201 if created or kind == CUSTOM else 200
        return JSONResponse(public_topic(doc), status_code=status, headers=_done(request))
    if request.method == "GET":
        async with node.store.transaction() as tx:
            doc = await node.topics.get(tx, topic_id, kind)
        return JSONResponse(public_topic(doc))
    if request.method == "PATCH":
        body = await _read_json(request)
        async with node.store.transaction() as tx:
            doc = await node.topics.get(tx, topic_id, kind)
            if isinstance(body, dict) and isinstance(body.get("tags"), dict):
                doc["tags"] = body["tags"]
            await tx.put_topic(topic_id.lower(), kind, doc["name"], doc)
        return JSONResponse(public_topic(doc), status_code=200)
    if request.method == "DELETE":
        async with node.store.transaction() as tx:
            existing = await tx.get_topic(topic_id.lower())
            deleted = existing is not None and await node.topics.delete(tx, topic_id)
            if deleted:
                # Its child subscriptions and its extension subscriptions (".../providers/...") alike.
                await node.subscriptions.delete_under(tx, f"{topic_id}/")
        node.subscriptions_changed()
        # The topics SDK takes 202 or 204 here (not 200).
        return Response(status_code=202, headers=_done(request)) if deleted else Response(status_code=204)
    return _method_not_allowed(request, "a topic")


async def _subscription(request: Request, parent: _Parent, name: str | None, action: str | None) -> Response:
    node = node_of(request)
    if name is None:
        if request.method != "GET":
            return _method_not_allowed(request, "a collection")
        async with node.store.transaction() as tx:
            docs = await node.subscriptions.list_in(tx, parent.collection)
        return JSONResponse({"value": [public_view(d) for d in docs]})
    arm_id = parent.collection + name
    if action:
        if request.method != "POST":
            return _method_not_allowed(request, f"'{action}' (a POST action)")
        async with node.store.transaction() as tx:
            doc = await node.subscriptions.get(tx, arm_id)
        dest_props = doc["properties"]["destination"]["properties"]
        if action.lower() == "getfullurl":
            return JSONResponse({"endpointUrl": dest_props["endpointUrl"]})
        return JSONResponse({"value": dest_props.get("deliveryAttributeMappings") or []})
    if request.method in ("PUT", "PATCH"):
        body = await _read_json(request)
        async with node.store.transaction() as tx:
            if request.method == "PUT":
                doc, _ = await node.subscriptions.put(
                    tx,
                    arm_id=arm_id,
                    name=name,
                    topic=parent.topic,
                    resource_type=parent.resource_type,
                    body=body,
                    source=parent.source,
                    input_schema=parent.input_schema,
                )
            else:
                doc = await node.subscriptions.update(tx, arm_id, body)
        node.subscriptions_changed()
        # azure-mgmt-eventgrid accepts only 201 for both create and update, then polls the operation.
        return JSONResponse(public_view(doc), status_code=201, headers=_lro(request, doc["callgrid"]["operationId"]))
    if request.method == "GET":
        async with node.store.transaction() as tx:
            doc = await node.subscriptions.get(tx, arm_id)
        return JSONResponse(public_view(doc))
    if request.method == "DELETE":
        async with node.store.transaction() as tx:
            deleted = await node.subscriptions.delete(tx, arm_id)
        node.subscriptions_changed()
        return Response(status_code=200 if deleted else 204)
    return _method_not_allowed(request, "an event subscription")


async def _operation_status(request: Request, operation_id: str) -> Response:
    if operation_id.startswith(_DONE):
        return JSONResponse({"id": operation_id, "name": operation_id, "status": "Succeeded"})
    node = node_of(request)
    async with node.store.transaction() as tx:
        doc = await node.subscriptions.find_operation(tx, operation_id)
    if doc is None:
        raise NotFound(f"Operation '{operation_id}' was not found.", code="OperationNotFound")
    private = doc["callgrid"]
    body: dict[str, Any] = {"id": operation_id, "name": operation_id, "status": private["operationStatus"]}
    if private["operationStatus"] == "Failed":
        body["error"] = {"code": "Url validation", "message": private["error"]}
    headers = _POLL_HEADERS if private["operationStatus"] == "InProgress" else None
    return JSONResponse(body, headers=headers)


async def validate_url(request: Request) -> Response:
    """GET on a validationUrl (manual validation), or GET/POST on a CloudEvents WebHook-Request-Callback.

    Unauthenticated, like Azure's: the token in the URL is the credential.
    """
    node = node_of(request)
    sub_id = request.query_params.get("id", "")
    token = request.query_params.get("token", "")
    name = await node.validator.validate_manually(sub_id, token)
    return JSONResponse({"message": f"Event subscription '{name}' validated."})


routes = [
    Route("/subscriptions/{path:path}", dispatch, methods=["GET", "PUT", "DELETE", "POST", "PATCH"]),
    Route("/eventsubscriptions/{name}/validate", validate_url, methods=["GET", "POST"]),
]
