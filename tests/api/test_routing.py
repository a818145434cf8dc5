"""Requests to fixed paths are found by lookup, and the route found is the one Starlette's scan picks.

The app is callgrid's own (all its routes, in their order); the scan is Starlette's `Router.app`, run on the
same scope for every path and method the app serves, and for paths that take parameters or no route takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route, Router

from callgrid.api.routing import IndexedRouter
from callgrid.config import Settings
from callgrid.node import Node
from callgrid.server import build_app

pytestmark = pytest.mark.store_independent


@pytest.fixture
def router(tmp_path: Path) -> IndexedRouter:
    app = build_app(Node(Settings(data_dir=tmp_path, clock="system")), start_node=False)
    assert isinstance(app.router, IndexedRouter)
    return app.router


async def _chosen(router: Router, app: Any, path: str, method: str) -> tuple[Any, ...]:
    """The route `app` hands the request to and the path parameters it set (the endpoint not run), or the
    status the router answered itself (404, a redirect)."""
    chosen: dict[str, Any] = {}
    answered: list[int] = []

    async def caught(scope: dict[str, Any], receive: Any, send: Any) -> None:
        chosen.update(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    originals = {id(r): r.handle for r in router.routes}
    for route in router.routes:
        route.handle = caught  # type: ignore[method-assign]
    try:
        scope = {"type": "http", "path": path, "root_path": "", "method": method, "headers": [], "query_string": b""}
        await app({**scope, "scheme": "https", "server": ("localhost", 443)}, receive, send)
    finally:
        for route in router.routes:
            route.handle = originals[id(route)]  # type: ignore[method-assign]
    route = chosen.get("route")
    return getattr(route, "path", None), chosen.get("path_params", {}), answered


async def test_every_fixed_route_is_the_one_the_scan_picks(router: IndexedRouter) -> None:
    fixed = [
        (r.path, m) for r in router.routes if isinstance(r, Route) and not r.param_convertors for m in r.methods or ()
    ]
    assert len(fixed) > 40  # callgrid's fixed paths, each with its methods
    assert set(router.fixed) == set(fixed)  # every one indexed
    for path, method in fixed:
        scanned = await _chosen(router, Router.app.__get__(router), path, method)
        assert router.fixed[path, method].path == scanned[0], (path, method)
        assert await _chosen(router, router.app, path, method) == scanned, (path, method)


async def test_the_hot_calls_are_looked_up(router: IndexedRouter) -> None:
    assert router.fixed[("/callgrid/v1/calls", "POST")].path == "/callgrid/v1/calls"
    assert router.fixed[("/calling/callConnections:redirect", "POST")].path == "/calling/callConnections:redirect"


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/calling/callConnections/abc", "GET"),  # a path parameter
        ("/calling/callConnections/abc:play", "POST"),
        ("/callgrid/v1/calls", "DELETE"),  # a method no route of the path takes (405)
        ("/callgrid/v1/calls/", "POST"),  # a trailing slash
        ("/no/such/path", "GET"),
    ],
)
async def test_everything_else_goes_to_the_scan(router: IndexedRouter, path: str, method: str) -> None:
    assert (path, method) not in router.fixed
    assert await _chosen(router, router.app, path, method) == await _chosen(
        router, Router.app.__get__(router), path, method
    )


async def test_a_fixed_path_shadowed_by_an_earlier_route_keeps_the_earlier_one() -> None:
    async def endpoint(scope: Any, receive: Any, send: Any) -> None: ...

    shadowing = Route("/items/{name}", endpoint, methods=["GET"])
    router = IndexedRouter([shadowing, Route("/items/new", endpoint, methods=["GET", "POST"])])
    assert router.fixed["/items/new", "GET"] is shadowing  # Starlette's scan stops at the first
    assert router.fixed["/items/new", "POST"].path == "/items/new"  # the earlier route takes only GET
    assert await _chosen(router, router.app, "/items/new", "GET") == ("/items/{name}", {"name": "new"}, [])
