"""`GET /metrics`: Event Grid's metrics, and the media plane's counters, for Prometheus. Unsigned, as
scrape targets are.

A scrape reads the durable counters (one row per topic, subscription, metric and label), adds those
still buffered in memory, and reads the subscriptions' names: its cost follows the number of
subscriptions, not the delivery history.
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
    # The durable counters and those still buffered, each count once (no fold moves them meanwhile).
    async with node.metrics.reading() as buffered:
        async with node.store.transaction() as tx:
            rows = await tx.metric_counts()
            names = {d["id"].lower(): d["name"] for d in await tx.list_subscriptions()}
        rows += buffered()
    text = render(rows, names) + _counters("media", node.media.metrics.snapshot())
    text += _counters("http", request.app.state.admission.snapshot())
    if node.sip is not None:
        text += _counters("sip", node.sip.snapshot())
    return Response(text, media_type=CONTENT_TYPE)


def _counters(part: str, counters: dict[str, float]) -> str:
    """The media plane's or the SIP trunk's counters (in memory: they describe live audio and
    signalling, which a restart ends anyway)."""
    lines = []
    for name, value in sorted(counters.items()):
        metric = f"callgrid_{part}_" + "".join("_" + c.lower() if c.isupper() else c for c in name)
        kind = "gauge" if name.startswith(("max", "active")) or name.endswith(("InFlight", "LagSeconds")) else "counter"
        lines += [f"# TYPE {metric} {kind}", f"{metric} {value:g}"]
    return "\n".join(lines) + "\n" if lines else ""


routes = [Route("/metrics", metrics, methods=["GET"])]
