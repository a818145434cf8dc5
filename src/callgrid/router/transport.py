"""A lean HTTP/1.1 transport for the router's SDK client: kept-alive connections, one write per request.

The SDK's requests still go through its pipeline (models, serialisation, retries, HMAC signing, response
decoding, error mapping); only the last step, bytes to and from the socket, is done here instead of by
aiohttp. aiohttp's client is general (cookies, redirects, proxies, compression, tracing hooks, streaming
writers) and costs ~100 us of CPU per small request on this machine; the router sends one or two small
JSON POSTs per call to one host, which need none of that: a request is formatted into one buffer and
written at once, and the response parsed by httptools (what uvicorn parses requests with).

Connections are pooled per (scheme, host, port) and reused while the server keeps them alive. A request
that finds its reused connection closed by the server before any byte of an answer (the race with the
server's idle timeout) is sent once more on a new connection: the router's calls carry a
Repeatability-Request-ID, so ACS answers a repeat as it answered the first. Other failures surface as
azure-core's exceptions, as with its own transports, so the SDK's retry policy treats them the same way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AsyncHttpResponse, AsyncHttpTransport
from azure.core.utils import case_insensitive_dict

_DEFAULT_PORTS = {"https": 443, "http": 80}
_FRAMING = frozenset(("host", "content-length", "transfer-encoding", "connection"))


class _Stale(Exception):
    """A reused connection was closed by the server before it answered."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.received = False  # any byte of the current answer
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ServiceResponseError(f"an unreadable HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self._fail(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.received:
                self.waiter.set_exception(ServiceResponseError(f"the connection closed mid-answer ({exc or 'EOF'})"))
            else:
                self.waiter.set_exception(_Stale(str(exc or "EOF")))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, read_timeout: float | None) -> None:
        self.received = False
        self.reason = b""
        self.headers = []
        self.body = []
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        assert self.transport is not None
        self.transport.write(data)
        timer = loop.call_later(read_timeout, self._timed_out) if read_timeout else None
        try:
            await self.waiter
        finally:
            if timer is not None:
                timer.cancel()
            self.waiter = None

    def _timed_out(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ServiceResponseTimeoutError("no complete answer in time"))
        self.close()


class _Response(AsyncHttpResponse):
    """A response read whole (the router's answers are a few hundred bytes at most)."""

    def __init__(self, request: Any, connection: _Connection) -> None:
        super().__init__(request, None)
        self.status_code = connection.parser.get_status_code()
        self.reason = connection.reason.decode("latin-1")
        self.headers = case_insensitive_dict(connection.headers)
        self.content_type = self.headers.get("content-type")
        self._body = b"".join(connection.body)

    def body(self) -> bytes:
        return self._body

    async def load_body(self) -> None:
        """Already loaded."""

    def stream_download(self, pipeline: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            if self._body:
                yield self._body

        return chunks()


class KeptAliveTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """azure-core's async transport interface over pooled HTTP/1.1 connections (no proxies, in-memory bodies)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_connections: int = 256,
        connect_timeout: float = 30.0,
        read_timeout: float = 300.0,
    ) -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    async def __aenter__(self) -> KeptAliveTransport:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    async def open(self) -> None:
        """Connections open on demand."""

    async def close(self) -> None:
        for pool in self._idle.values():
            for connection in pool:
                connection.close()
        self._idle.clear()

    async def send(self, request: Any, **config: Any) -> AsyncHttpResponse:
        url = urlsplit(request.url)
        scheme = url.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not url.hostname:
            raise ServiceRequestError(f"cannot send to {request.url}")
        key = (scheme, url.hostname, url.port or _DEFAULT_PORTS[scheme])
        data = _format(request, url.netloc, url.path or "/", url.query)
        read_timeout = config.get("read_timeout") or self._read_timeout
        async with self._slots:
            connection, reused = await self._checkout(key)
            try:
                await connection.exchange(data, read_timeout)
            except _Stale as exc:
                connection.close()
                if not reused:
                    raise ServiceResponseError(f"the connection closed before an answer ({exc})") from None
                # The server's idle timeout won the race with this request: once more, on a new connection.
                connection, _ = await self._checkout(key, fresh=True)
                try:
                    await connection.exchange(data, read_timeout)
                except _Stale as again:
                    connection.close()
                    raise ServiceResponseError(f"the connection closed before an answer ({again})") from None
                except BaseException:
                    connection.close()
                    raise
            except BaseException:
                connection.close()  # cancelled or failed mid-exchange: its state is unknown
                raise
            response = _Response(request, connection)
            if connection.parser.should_keep_alive() and not connection.closed:
                self._idle.setdefault(key, []).append(connection)
            else:
                connection.close()
            return response

    async def _checkout(self, key: tuple[str, str, int], fresh: bool = False) -> tuple[_Connection, bool]:
        pool = self._idle.get(key)
        while pool and not fresh:
            connection = pool.pop()
            if not connection.closed:
                return connection, True
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=self._ssl if scheme == "https" else None
                )
        except TimeoutError as exc:
            raise ServiceRequestTimeoutError(f"no connection to {host}:{port} in time", error=exc) from exc
        except OSError as exc:  # refused, unreachable, TLS failures (ssl.SSLError is an OSError)
            raise ServiceRequestError(f"could not connect to {host}:{port}: {exc}", error=exc) from exc
        return connection, False


def _format(request: Any, netloc: str, path: str, query: str) -> bytes:
    """The request line, headers and body in one buffer."""
    content = request.content if hasattr(request, "content") else request.data  # azure.core.rest's, or legacy
    if content is None:
        body = b""
    elif isinstance(content, str):
        body = content.encode("utf-8")
    elif isinstance(content, bytes | bytearray):
        body = bytes(content)
    else:
        raise ServiceRequestError("this transport sends in-memory bodies only")
    target = f"{path}?{query}" if query else path
    lines = [f"{request.method} {target} HTTP/1.1\r\nHost: {netloc}\r\n"]
    for name, value in request.headers.items():
        if name.lower() not in _FRAMING:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ServiceRequestError(f"header {name!r} would break the request's framing")
            lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("latin-1") + body
