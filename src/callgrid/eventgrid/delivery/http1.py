"""The delivery client: HTTP/1.1 over kept-alive connections, one write per request, httptools' parser.

A delivery needs little of a general HTTP client: no cookies, redirects, proxies, streaming uploads or
HTTP/2. What it does need is here: a pool per origin with a per-host share (a host that hangs keeps only
its own connections), a total time limit, TLS without verification (local apps use self-signed
certificates), answers read within a bound and decompressed within it, and one quick retry on a fresh
connection when a kept-alive one turns out to have been closed by the server before it answered.

Why by hand: aiohttp spent 3-5x the CPU of a bare protocol on a webhook POST (benchmarks/delivery_client.py),
the largest single cost left in a routed call (issue 15). httptools (the C parser uvicorn uses) does the
parsing; what is written here is the connection handling around it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools

from callgrid.eventgrid.delivery.sender import MAX_RESPONSE_BYTES, SendResult, outcome_for

# Idle connections older than this are closed (servers usually close theirs sooner: uvicorn after 5 s).
KEEPALIVE_SECONDS = 15.0
# An answer's status line and headers together; more is a misbehaving server.
MAX_HEADER_BYTES = 64 * 1024
_USER_AGENT = "callgrid-eventgrid"
# Set by us, whatever the caller's headers say: they describe the bytes we write.
_OURS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's header field name
_TOKENS: set[str] = set()  # names already found to be tokens
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# Characters a request target may carry as they are (RFC 3986 reserved and unreserved, and '%').
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:-._~%"


class _ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 answer we can use."""


class _Stale(ConnectionError):
    """A kept-alive connection was closed before any byte of the answer came, most likely by the server
    while it sat idle. Sent again once on a fresh connection: deliveries are at least once, and the
    alternative is the retry schedule's wait."""


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    # An emulator's webhooks are local apps with self-signed certificates; Azure would refuse them.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port: one pool each
    host: str  # as connected to (IDNA-encoded)
    port: int
    tls: bool
    start: str  # " <request-target> HTTP/1.1\r\nHost: ...\r\n" and what the URL itself adds


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL: {url!r}")
    host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    default = 443 if scheme == "https" else 80
    port = parts.port or default  # .port raises ValueError for a port out of range
    shown = f"[{host}]" if ":" in host else host
    if port != default:
        shown += f":{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    target = quote(target, safe=_TARGET_SAFE)  # spaces, controls and non-ASCII, percent-encoded
    start = f" {target} HTTP/1.1\r\nHost: {shown}\r\n"
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        start += f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
    return _Target((scheme, host, port), host, port, scheme == "https", start)


def _head(method: str, target: _Target, headers: dict[str, str], length: int) -> bytes:
    lines = [method, target.start]
    for name, value in headers.items():
        if name not in _TOKENS:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"not a header name: {name!r}")
            if len(_TOKENS) < 4096:  # names come from code and subscriptions: few
                _TOKENS.add(name)
        if "\r" in value or "\n" in value or "\0" in value:
            # A value split in two is a forged header (request smuggling); refuse the request whole.
            raise ValueError(f"header {name!r} has a line break or NUL in its value")
        if name.lower() in _OURS:
            continue
        lines.append(f"{name}: {value}\r\n")
    if length or method not in _BODYLESS:
        lines.append(f"Content-Length: {length}\r\n")
    lines.append(f"User-Agent: {_USER_AGENT}\r\nAccept-Encoding: gzip, deflate\r\n\r\n")
    return "".join(lines).encode()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the answer it is waiting for, if any."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._received = False  # any byte of the current answer
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self.truncated = False
        self.keep_alive = False
        self._complete = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end is known without the connection closing
        self._inflate: zlib._Decompress | None = None
        self.decode_error: str | None = None

    # ---------------------------------------------------------------- the exchange

    def send(self, data: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self._reset()
        self._received = False
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._answer

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    @property
    def reusable(self) -> bool:
        return self._complete and self.keep_alive and not self.truncated and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: BaseException | None = None) -> None:
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            return
        if error is None:
            answer.set_result(None)
        else:
            answer.set_exception(error)

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.abort()
            self._finish(_ProtocolError("the server switched protocols"))
        except (httptools.HttpParserError, _ProtocolError) as exc:
            self.abort()
            self._finish(_ProtocolError(f"not an HTTP/1.1 answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None:
            return
        if self._headers_done and not self._framed:
            # No Content-Length, not chunked: the answer is everything until the server closes.
            self._complete = True
            self._finish()
        elif not self._received:
            self._finish(_Stale("the server closed the connection before answering"))
        else:
            self._finish(ConnectionError("the server closed the connection in the middle of its answer"))

    # ---------------------------------------------------------------- httptools' callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer to one request: the framing is broken, whatever follows is not trusted.
            raise _ProtocolError("more than one answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _ProtocolError(f"headers longer than {MAX_HEADER_BYTES} bytes")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = True
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                self._framed = True
            elif lower == b"content-encoding":
                coding = value.strip().lower()
                if coding in (b"gzip", b"x-gzip"):
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif coding == b"deflate":
                    self._inflate = zlib.decompressobj()  # zlib-wrapped; raw deflate is tried on error
        if self.status in (204, 304):
            self._framed = True

    def on_body(self, data: bytes) -> None:
        if self.truncated or self.decode_error is not None:
            return
        room = MAX_RESPONSE_BYTES - self._size
        if self._inflate is not None:
            data = self._decompress(data, room)
        if len(data) > room or (self._inflate is not None and self._inflate.unconsumed_tail):
            data = data[:room]
            self.truncated = True
        self._chunks.append(data)
        self._size += len(data)
        if self.truncated:
            # What is left is not read: the connection is closed instead of drained (a gzip bomb stays small).
            self._complete = True
            self.abort()
            self._finish()

    def _decompress(self, data: bytes, room: int) -> bytes:
        assert self._inflate is not None
        try:
            return self._inflate.decompress(data, room + 1)
        except zlib.error as exc:
            if not self._size and not self._inflate.unused_data and self._inflate.eof is False:
                # "deflate" sent raw, without the zlib wrapper, as some servers do.
                try:
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    return self._inflate.decompress(data, room + 1)
                except zlib.error:
                    pass
            # The status is what a delivery is judged by; a body that cannot be decoded is left empty.
            self.decode_error = f"the answer's body could not be decompressed: {exc}"
            self._chunks.clear()
            self._size = 0
            return b""

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            self._reset()  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        self._complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()


class _Pool:
    """The connections to one origin: idle ones (most recently used first) and a share of the slots."""

    def __init__(self, per_host: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(per_host)
        self.busy = 0  # requests holding or waiting for a slot

    def take(self, now: float) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None


class Http1Sender:
    """The `Sender` for webhooks: see the module's docstring."""

    def __init__(self, max_connections: int = 256, max_connections_per_host: int = 32) -> None:
        self._max_connections = max_connections
        # A host's share of the connections (the delivery engine's per-destination share, too): requests
        # to a host that hangs, timed-out ones still waiting for a late answer included, wait for that
        # host's own connections and never take every connection from the others.
        self._per_host = max_connections_per_host
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._slots: asyncio.Semaphore | None = None
        self._tls: ssl.SSLContext | None = None
        self._sweeping: asyncio.TimerHandle | None = None

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        try:
            target = self._targets.get(url) or self._remember(url)
            data = _head(method, target, headers, len(body)) + body
        except (ValueError, UnicodeError) as exc:
            return SendResult(None, "GenericError", error=str(exc))
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(target, data)
        except TimeoutError:
            return SendResult(None, "TimedOut", error=f"no response within {timeout:g} s")
        except socket.gaierror as exc:
            return SendResult(None, "ResolutionError", error=f"cannot resolve {target.host}: {exc}")
        except (OSError, _ProtocolError) as exc:
            return SendResult(None, "SocketError", error=f"{type(exc).__name__}: {exc}")

    def _remember(self, url: str) -> _Target:
        target = _parse(url)
        if len(self._targets) >= 1024:  # URLs come from subscriptions: few, but not to grow without end
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _exchange(self, target: _Target, data: bytes) -> SendResult:
        """Holding one of the host's slots and one of all slots, send over a connection to the target."""
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(self._per_host)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        pool.busy += 1  # waiting for a slot counts: the pool is not forgotten under a waiter
        try:
            async with pool.slots, self._slots:
                return await self._over(pool, target, data)
        finally:
            pool.busy -= 1

    async def _over(self, pool: _Pool, target: _Target, data: bytes) -> SendResult:
        """Over a kept-alive connection of the pool's, or a new one; kept for the next if it can be."""
        loop = asyncio.get_running_loop()
        connection = pool.take(loop.time())
        try:
            if connection is None:
                connection = await self._connect(target)
                await connection.send(data)
            else:
                try:
                    await connection.send(data)
                except _Stale:
                    connection = await self._connect(target)
                    await connection.send(data)
        except BaseException:
            if connection is not None:
                connection.abort()  # its state is unknown: never reused
            raise
        status = connection.status
        result = SendResult(
            status=status,
            outcome=outcome_for(status),
            body=connection.body,
            truncated=connection.truncated,
            headers={n.decode("latin-1"): v.decode("utf-8", "replace") for n, v in connection.headers},
            error=connection.decode_error,
        )
        if connection.reusable and self._pools.get(target.origin) is pool:  # not closed meanwhile
            connection.idle_since = loop.time()
            pool.idle.append(connection)
            self._sweep_later(loop)
        else:
            connection.close()
        return result

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if target.tls:
            if self._tls is None:
                self._tls = _insecure_context()
            tls = self._tls
        _, connection = await loop.create_connection(
            _Connection,
            target.host,
            target.port,
            ssl=tls,
            server_hostname=target.host if tls else None,
        )
        return connection

    def _sweep_later(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeping is None:
            self._sweeping = loop.call_later(KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle too long, and forget origins with nothing left."""
        self._sweeping = None
        now = asyncio.get_running_loop().time()
        left = False
        for origin, pool in list(self._pools.items()):
            kept = deque(c for c in pool.idle if not c.closed and now - c.idle_since < KEEPALIVE_SECONDS)
            for connection in pool.idle:
                if connection not in kept:
                    connection.close()
            pool.idle = kept
            left = left or bool(kept)
            if not kept and not pool.busy:
                del self._pools[origin]
        if left:
            self._sweeping = asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS, self._sweep)

    async def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()
        self._slots = None
        # Let the transports finish closing (TLS close_notify) before the loop may end.
        await asyncio.sleep(0)
