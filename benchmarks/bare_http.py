"""A bare HTTP/1.1 server for the benchmarks' own endpoints (the driver's webhook, the floor's stand-ins).

An asyncio protocol over httptools' parser (the C parser uvicorn uses), kept-alive connections, one request
at a time per connection: nothing else. The driver shares the machine's two cores with what it measures;
aiohttp's server cost it about as much CPU per webhook POST as the whole request cost the do-nothing stand-in
(route_floor.py), and every cycle it takes is one the measured processes lose.

A handler gets (method, path, headers with lower-case names, body) and returns (status, body), or an
awaitable of that: the answer is written when it is ready.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

Answer = tuple[int, bytes]
Handler = Callable[[bytes, bytes, dict[bytes, bytes], bytes], Answer | Awaitable[Answer]]

_REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request", 500: b"Error"}


class _Protocol(asyncio.Protocol):
    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        answer = self.handle(method, self.url.partition(b"?")[0], self.headers, b"".join(self.body))
        if inspect.isawaitable(answer):
            asyncio.ensure_future(answer).add_done_callback(self._answered)
        else:
            self._write(answer)  # type: ignore[arg-type]

    def _answered(self, future: asyncio.Future[Answer]) -> None:
        failed = future.cancelled() or future.exception() is not None
        self._write((500, b"") if failed else future.result())

    def _write(self, answer: Answer) -> None:
        status, body = answer
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n" % (
            status,
            _REASONS.get(status, b"OK"),
            len(body),
        )
        self.transport.write(head + body)


async def serve(handle: Handler, host: str, port: int, tls: ssl.SSLContext | None = None) -> Any:
    """Listening until the returned server is closed."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Protocol(handle), host, port, ssl=tls, backlog=2048)
