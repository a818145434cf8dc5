"""The one HTTP client for outgoing deliveries (Event Grid webhooks, handshakes, callbacks).

aiohttp: on this 2-core machine it POSTs several times faster than httpx's async client. The
`Sender` protocol is the seam tests and other transports (queues, pull delivery) plug into.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Protocol

import aiohttp


@dataclass(frozen=True)
class SendResult:
    status: int | None  # HTTP status, or None when no response came
    outcome: str  # Event Grid's lastDeliveryOutcome vocabulary
    body: bytes = b""
    headers: dict[str, str] | None = None
    error: str | None = None
    truncated: bool = False  # the answer was longer than MAX_RESPONSE_BYTES; `body` is its beginning

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 204


_OUTCOMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "TimedOut",
    413: "PayloadTooLarge",
    429: "Busy",
    503: "Busy",
}


def outcome_for(status: int) -> str:
    if 200 <= status <= 204:
        return "Succeeded"
    return _OUTCOMES.get(status, "GenericError")


# What is read of an answer (after decompression): a handshake's {"validationResponse": ...} is tens of
# bytes and a delivery's answer is only looked at for its status. Reading with a bound, rather than
# response.read(), keeps a gzip bomb from being inflated whole (aiohttp inflates as it is read).
MAX_RESPONSE_BYTES = 64 * 1024


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether it was longer (then its connection is closed rather
    than drained)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        chunks.append(chunk[: limit - size])
        size += len(chunk)
        if size > limit:
            response.close()
            return b"".join(chunks), True
    return b"".join(chunks), False


class Sender(Protocol):
    async def send(
        self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float
    ) -> SendResult: ...

    async def close(self) -> None: ...


class AiohttpSender:
    def __init__(self, max_connections: int = 256, max_connections_per_host: int = 32) -> None:
        self._max_connections = max_connections
        # A host's share of the connections (the delivery engine's per-destination share, too): requests
        # to a host that hangs, timed-out ones still waiting for a late answer included, wait for that
        # host's own connections and never take every connection from the others.
        self._max_per_host = max_connections_per_host
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Local apps often use self-signed certificates; Azure would refuse them, an emulator should not.
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=self._max_per_host, ssl=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        try:
            async with self._client().request(
                method,
                url,
                data=body if body else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                content, truncated = await _read_bounded(response, MAX_RESPONSE_BYTES)
                return SendResult(
                    status=response.status,
                    outcome=outcome_for(response.status),
                    body=content,
                    truncated=truncated,
                    headers={k: v for k, v in response.headers.items()},
                )
        except TimeoutError:
            return SendResult(None, "TimedOut", error=f"no response within {timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):
                return SendResult(None, "ResolutionError", error=str(exc))
            return SendResult(None, "SocketError", error=str(exc))
        except (aiohttp.ClientError, asyncio.CancelledError, OSError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            return SendResult(None, "SocketError", error=f"{type(exc).__name__}: {exc}")
        except ValueError as exc:  # e.g. an URL aiohttp cannot parse
            return SendResult(None, "GenericError", error=str(exc))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
