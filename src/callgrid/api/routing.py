"""Starlette's router, with requests to fixed paths found by one lookup instead of a scan of every route.

Starlette tries each route's regular expression in order until one matches. callgrid has about 80 routes,
and the calls it takes most often are far down the list: `POST /callgrid/v1/calls` is the 57th, costing
~90 µs of matching on a slow machine, before any of the request's own work. Most routes have no path
parameters, so for those the answer is fixed by path and method: it is worked out once, by Starlette's own
scan, and looked up after that. Anything else (a path with parameters, a method a route does not take, a
trailing-slash redirect, a mount) goes through Starlette's scan as before, so the route chosen is always
the one Starlette would choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send

__all__ = ["IndexedRouter"]


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(list(routes), **kwargs)
        self.fixed = self._fixed_routes()

    def _fixed_routes(self) -> dict[tuple[str, str], Route]:
        """(path, method) -> the route Starlette's scan picks, for every path of a route without parameters."""
        index: dict[tuple[str, str], Route] = {}
        for candidate in self.routes:
            if not isinstance(candidate, Route) or candidate.param_convertors or not candidate.methods:
                continue
            for method in candidate.methods:
                chosen = self._scan(candidate.path, method)
                # Only a full match of a plain route is worth keeping: the scan's choice, which may be an
                # earlier route than the candidate, is what the lookup returns.
                if isinstance(chosen, Route):
                    index.setdefault((candidate.path, method), chosen)
        return index

    def _scan(self, path: str, method: str) -> BaseRoute | None:
        scope = {"type": "http", "path": path, "root_path": "", "method": method}
        for route in self.routes:  # as Starlette's scan: the first full match wins, partial ones only after
            if route.matches(scope)[0] is Match.FULL:
                return route
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.fixed.get((scope["path"], scope["method"]))
            if route is not None:
                match, child_scope = route.matches(scope)  # one expression, to set the scope as the scan would
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
