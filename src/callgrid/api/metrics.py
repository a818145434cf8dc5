"""`GET /metrics`: Event Grid's metrics for Prometheus. Unsigned, as scrape targets are.

A scrape reads the durable counters (one row per topic, subscription, metric and label) and the
subscriptions' names: its cost follows the number of subscriptions, not the delivery history.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import node_of
from callgrid.eventgrid.delivery.metrics import render

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        rows = await tx.metric_counts()
        names = {d["id"].lower(): d["name"] for d in await tx.list_subscriptions()}
    return Response(render(rows, names), media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"])]
