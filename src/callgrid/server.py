"""Builds the ASGI app from the parts: a Node (the domain) and the routes over it. No logic of its own."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from callgrid import console
from callgrid.api import (
    arm,
    callgrid_v1,
    calling,
    deliveries,
    eventgrid_publish,
    faults,
    identity,
    metrics,
    phone_numbers,
    recordings,
    routing,
    simulator,
    sip_routing,
    throttle,
)
from callgrid.api.errors import EXCEPTION_HANDLERS
from callgrid.node import Node


def build_app(node: Node, *, start_node: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_node:
            await node.start()
        # What exists once started (modules, routes, the keys) lives as long as the server: out of the
        # collector's sight, a full collection walks only what calls create (it paused the 20 ms media
        # ticks for tens of milliseconds).
        gc.freeze()
        watching = None
        if admission.max_delivery_lag_seconds > 0 and node.virtual_clock is None:
            watching = asyncio.create_task(
                admission.watch_deliveries(node.store, node.clock, waiting_since=node.delivery.backlog_since)
            )
        try:
            yield
        finally:
            if watching is not None:
                watching.cancel()
            await console.shutdown(app.state)
            if start_node:
                await node.stop()

    admission = throttle.Admission(
        node.settings.max_requests_in_flight,
        retry_after_seconds=node.settings.throttle_retry_after_seconds,
        max_delivery_lag_seconds=node.settings.max_delivery_lag_seconds,
    )
    app = Starlette(
        routes=[
            *identity.routes,
            *phone_numbers.routes,
            *calling.routes,
            *recordings.routes,
            *simulator.routes,
            *sip_routing.routes,
            *callgrid_v1.routes,
            *arm.routes,
            *eventgrid_publish.routes,
            *deliveries.routes,
            *metrics.routes,
            *faults.routes,
            console.mount(),
        ],
        # Outermost, so a refusal costs no other middleware's work.
        middleware=[Middleware(throttle.Throttle, admission=admission), Middleware(faults.OperationFaults)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router = routing.IndexedRouter(app.router.routes, lifespan=lifespan)
    app.state.node = node
    app.state.admission = admission
    console.install(app.state, node)
    return app
