"""The data plane of custom topics: where `EventGridPublisherClient` posts (a topic's `endpoint`).

Authentication comes before the body is read, then size and schema checks (eventgrid.md 1.1); then
every event and its deliveries are written in one transaction before the 200: an acknowledged event is never lost.
The publish metrics (PublishSuccessCount, Matched/UnmatchedEventCount, PublishSuccessLatencyInMs)
are written in that same transaction; a refused request is counted (PublishFailCount, by error
code) in a transaction of its own, since the publishing one is rolled back.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import node_of
from callgrid.api.body import read_body
from callgrid.errors import CallgridError
from callgrid.eventgrid.custom_topics import MAX_REQUEST_BYTES
from callgrid.eventgrid.delivery.metrics import MetricCounts
from callgrid.jsonbody import loads
from callgrid.store.keys import random_uuid


def _event_count(body: bytes) -> int:
    # A request refused before its body was read (401, 413 by its length) counts as one event: its events
    # were never looked at.
    try:
        parsed = loads(body)
    except (ValueError, UnicodeDecodeError):
        return 1
    return len(parsed) if isinstance(parsed, list) and parsed else 1


async def publish(request: Request) -> Response:
    began = time.perf_counter()
    node = node_of(request)
    name = request.path_params["name"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    topic_id: str | None = None
    body = b""
    try:
        # Who is publishing is settled before the body is read (an unauthenticated body costs nothing), and
        # the body is read with Event Grid's 1 MB limit outside any transaction (a slow one holds no lock).
        async with node.store.transaction() as tx:
            topic = await node.topics.find_for_publish(tx, name)
        topic_id = topic["id"]
        node.topics.authenticate(topic, headers)
        body = await read_body(request, MAX_REQUEST_BYTES)
        async with node.store.transaction() as tx:
            topic = await node.topics.find_for_publish(tx, name)
            events = node.topics.parse_events(topic, body, headers.get("content-type", ""))
            counts = MetricCounts()
            for event in events:
                # Publishers choose event ids; the outbox key must be unique whatever they chose.
                await node.publisher.publish(tx, topic["id"], event, storage_id=random_uuid(), counts=counts)
            counts.publish_latency(topic["id"], (time.perf_counter() - began) * 1000.0)
            await tx.add_metric_counts(counts.rows())
    except CallgridError as exc:
        if topic_id is not None:
            failed = MetricCounts()
            failed.publish_failed(topic_id, exc.code, _event_count(body))
            async with node.store.transaction() as tx:
                await tx.add_metric_counts(failed.rows())
        raise
    return Response(status_code=200)


routes = [Route("/eventgrid/topics/{name}/api/events", publish, methods=["POST"])]
