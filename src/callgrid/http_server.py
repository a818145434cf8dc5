"""Runs the ASGI app under uvicorn, with the one guard uvicorn lacks: a deadline for a request's headers.

uvicorn times out an idle keep-alive connection only after a response (`timeout_keep_alive`); a
connection that opens (TLS done) and then sends nothing, or a request line and some headers and then
stalls (slowloris), is held forever: measured, 100 such connections were all still open after 130 s.
Here each request's headers must be complete within `headers_timeout` seconds of the connection opening
or of the request's first byte, else the connection is closed. Kestrel (what ACS runs on) has the same
rule, RequestHeadersTimeout, 30 s by default. A stalled body is the body reader's business
(`api/body.py`), and a TLS handshake that never ends is asyncio's (60 s, ssl_handshake_timeout).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


def guarded_protocol(headers_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing connections whose request headers do not arrive in time."""

    class HeadersDeadlineProtocol(HttpToolsProtocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            self._arm_headers_deadline()

        def data_received(self, data: bytes) -> None:
            # The first bytes of a next request on a kept-alive connection start its deadline.
            if self._headers_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_headers_deadline()
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm_headers_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_headers_deadline()
            super().connection_lost(exc)

        def _arm_headers_deadline(self) -> None:
            self._disarm_headers_deadline()
            self._headers_timer = self.loop.call_later(headers_timeout, self._headers_too_late)

        def _disarm_headers_deadline(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _headers_too_late(self) -> None:
            self._headers_timer = None
            if not self.transport.is_closing():
                log.info(
                    "closing a connection from %s: no complete request headers in %g s", self.client, headers_timeout
                )
                self.transport.close()

    return HeadersDeadlineProtocol


class _CoalescingTransport:
    """A transport whose writes in one turn of the loop go out as one.

    uvicorn writes a response's status line and headers, then its body: over TLS that is two records, two
    encryptions and two sends (and two reads on the client's side) for what is nearly always one small
    answer. Held until the end of the turn, they leave together; nothing waits longer than that turn.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def run(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str,
    headers_timeout: float,
    keep_alive: float,
    graceful_shutdown: float | None = None,
    **ssl: Any,
) -> None:
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # uvicorn formats every request's access line before its logger drops it below info: only ask for
        # the lines when they can be seen.
        access_log=LOG_LEVELS.get(log_level.lower(), logging.INFO) <= logging.INFO,
        http=guarded_protocol(headers_timeout),
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]  # an int in the signature, any number works
        timeout_graceful_shutdown=graceful_shutdown,  # type: ignore[arg-type]  # an int in the signature
        **ssl,
    )
