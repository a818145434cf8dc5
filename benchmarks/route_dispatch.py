"""What finding a request's route costs: callgrid's router (fixed paths looked up) against Starlette's scan.

The real app's routes, in their order; the two requests of a routed call (`POST /callgrid/v1/calls`,
`POST /calling/callConnections:redirect`) and one with a path parameter (which both routers scan). Each is
dispatched to a do-nothing stand-in for its endpoint, so only the routing is timed. Best of 5 runs.

Prints JSON: µs per request for each router, and the ratio (indexed / scan).
Usage: python benchmarks/route_dispatch.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.routing import Router

from callgrid.config import Settings
from callgrid.node import Node
from callgrid.server import build_app

PATHS = [
    ("POST", "/callgrid/v1/calls"),
    ("POST", "/calling/callConnections:redirect"),
    ("GET", "/calling/callConnections/abc"),
]


async def _time(app: Any, method: str, path: str, requests: int) -> float:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), None, None)
        best = min(best, time.perf_counter() - started)
    return best / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        router = build_app(Node(Settings(data_dir=Path(tmp), clock="system")), start_node=False).router

        async def nothing(scope: Any, receive: Any, send: Any) -> None:
            return None

        for route in router.routes:
            route.handle = nothing  # type: ignore[method-assign]
        out = {}
        for method, path in PATHS:
            indexed = await _time(router.app, method, path, args.requests)
            scan = await _time(Router.app.__get__(router), method, path, args.requests)
            out[f"{method} {path}"] = {
                "indexed_us": round(indexed, 2),
                "starlette_scan_us": round(scan, 2),
                "ratio": round(indexed / scan, 3),
            }
    print(json.dumps({"benchmark": "route_dispatch", "routes": len(router.routes), "requests": out}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
