"""The router's assignments and recent decisions, when a router is attached to the console.

The router is an app of its own (it talks to callgrid only through the official SDK), so the console
reads it the way anyone would: its HTTP API with its API key (`callgrid router info` shows both). The
link is kept in the store's metadata so it survives a restart; reads are cached briefly, because every
live stream renders every half second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from callgrid.errors import InvalidRequest
from callgrid.node import Node

META_KEY = "console.router"
CACHE_SECONDS = 2.0
TIMEOUT_SECONDS = 3.0


@dataclass
class RouterView:
    url: str | None
    assignments: list[dict[str, Any]]
    count: int
    decisions: list[dict[str, Any]]
    error: str | None = None


class RouterLink:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._link: tuple[str, str] | None = None
        self._loaded = False
        self._cached: tuple[float, RouterView] | None = None

    async def _current(self) -> tuple[str, str] | None:
        if not self._loaded:
            async with self._node.store.transaction() as tx:
                saved = await tx.get_meta(META_KEY)
            if saved:
                doc = json.loads(saved)
                self._link = (doc["url"], doc["apiKey"])
            self._loaded = True
        return self._link

    async def attach(self, url: str, api_key: str) -> int:
        """Attach the router at `url` once it answers with `api_key`; returns how many numbers it assigns."""
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest("The router's URL must start with http:// or https://.")
        try:
            found = await self._get(url, api_key, "/api/assignments?limit=1")
        except (TimeoutError, ValueError) as exc:
            raise InvalidRequest(f"The router at {url} did not answer: {exc or type(exc).__name__}.") from None
        async with self._node.store.transaction() as tx:
            await tx.set_meta(META_KEY, json.dumps({"url": url, "apiKey": api_key}))
        self._link, self._loaded, self._cached = (url, api_key), True, None
        return int(found.get("count", 0))

    async def detach(self) -> None:
        async with self._node.store.transaction() as tx:
            await tx.set_meta(META_KEY, "")
        self._link, self._loaded, self._cached = None, True, None

    async def view(self) -> RouterView:
        link = await self._current()
        if link is None:
            return RouterView(None, [], 0, [])
        if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        url, key = link
        try:
            assignments = await self._get(url, key, "/api/assignments?limit=200")
            decisions = await self._get(url, key, "/api/decisions?limit=30")
            view = RouterView(
                url, assignments.get("value", []), int(assignments.get("count", 0)), decisions.get("value", [])
            )
        except (TimeoutError, ValueError) as exc:
            view = RouterView(url, [], 0, [], f"the router did not answer: {exc or type(exc).__name__}")
        self._cached = (time.monotonic(), view)
        return view

    @staticmethod
    async def _get(url: str, api_key: str, path: str) -> dict[str, Any]:
        """The router's JSON answer; ValueError when it gives none (TimeoutError when it is too slow)."""
        import aiohttp  # on first use: importing it is a large share of the server's start

        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        headers = {"Authorization": f"Bearer {api_key}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url + path, headers=headers) as r,
            ):
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status} {await r.text()}")
                body: dict[str, Any] = await r.json()
                return body
        except aiohttp.ClientError as exc:
            raise ValueError(str(exc) or type(exc).__name__) from exc
