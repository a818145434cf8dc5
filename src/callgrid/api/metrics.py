"""`GET /metrics`: Event Grid's metrics, and the media plane's counters, for Prometheus. Unsigned, as
scrape targets are.

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
    return Response(render(rows, names) + _media(node.media.metrics.snapshot()), media_type=CONTENT_TYPE)


def _media(counters: dict[str, float]) -> str:
    """The media plane's counters (in memory: they describe live audio, which a restart ends anyway)."""
    lines = []
    for name, value in sorted(counters.items()):
        metric = "callgrid_media_" + "".join("_" + c.lower() if c.isupper() else c for c in name)
        lines += [f"# TYPE {metric} {'gauge' if name.startswith('max') else 'counter'}", f"{metric} {value:g}"]
    return "\n".join(lines) + "\n" if lines else ""


routes = [Route("/metrics", metrics, methods=["GET"])]
