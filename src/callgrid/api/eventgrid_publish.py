"""The data plane of custom topics: where `EventGridPublisherClient` posts (a topic's `endpoint`).

Authentication, size and schema checks come first (eventgrid.md 1.1); then every event and its
deliveries are written in one transaction before the 200: an acknowledged event is never lost.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import node_of


async def publish(request: Request) -> Response:
    node = node_of(request)
    name = request.path_params["name"]
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    async with node.store.transaction() as tx:
        topic = await node.topics.find_for_publish(tx, name)
        node.topics.authenticate(topic, headers)
        events = node.topics.parse_events(topic, body, headers.get("content-type", ""))
        for event in events:
            # Publishers choose event ids; the outbox key must be unique whatever they chose.
            await node.publisher.publish(tx, topic["id"], event, storage_id=str(uuid.uuid4()))
    return Response(status_code=200)


routes = [Route("/eventgrid/topics/{name}/api/events", publish, methods=["POST"])]
