"""The contract of the delivery sender (`Sender`), held by every implementation: what a webhook's server sees,
what the caller is told, and how connections are kept, shared, bounded and given up.

Real servers on 127.0.0.1: aiohttp.web where an ordinary answer will do, raw asyncio servers where the wire
itself is the point (framing, connections, half-answers). An implementation joins by one line in
IMPLEMENTATIONS. (aiohttp, the client before Http1Sender, failed three of these: it sent no POST again after a
kept-alive connection the server had closed, its URL library unescaped reserved characters in the request
target, and it wrote any header name as given.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from http import HTTPStatus
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callgrid.eventgrid.delivery.sender import MAX_RESPONSE_BYTES, Sender, SendResult

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

# Every implementation of the protocol, as "module:class", made with (max_connections, max_connections_per_host).
IMPLEMENTATIONS = [
    "callgrid.eventgrid.delivery.http1:Http1Sender",
]

SenderFactory = Callable[..., Sender]


def _implementation_id(path: str) -> str:
    return path.rpartition(":")[2]


@pytest.fixture(params=IMPLEMENTATIONS, ids=_implementation_id)
async def make_sender(request: pytest.FixtureRequest) -> AsyncIterator[SenderFactory]:
    module, _, name = request.param.partition(":")
    implementation = getattr(importlib.import_module(module), name)
    made: list[Sender] = []

    def make(max_connections: int = 256, max_connections_per_host: int = 32) -> Sender:
        sender: Sender = implementation(
            max_connections=max_connections, max_connections_per_host=max_connections_per_host
        )
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.close()


@pytest.fixture
def sender(make_sender: SenderFactory) -> Sender:
    return make_sender()


# ---------------------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Request:
    """One request as it came over the wire: header names as written, in order."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # the server's number for the connection it came on, from 1

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Peer:
    """One accepted connection, as the server sees it."""

    def __init__(
        self, server: WireServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer
        self.ended = asyncio.Event()  # the client closed its side

    async def request(self) -> Request | None:
        """The next request, recorded on the server; None once the client has closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.server.fragments.append(exc.partial)
            self.ended.set()
            return None
        except ConnectionError:
            self.ended.set()
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
        request = Request(method, target, version, headers, b"", self.number)
        if "chunked" in ",".join(request.values("Transfer-Encoding")).lower():
            request.body = await self._chunked_body()
        elif request.values("Content-Length"):
            request.body = await self.reader.readexactly(int(request.values("Content-Length")[0]))
        self.server.requests.append(request)
        return request

    async def _chunked_body(self) -> bytes:
        body = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return body
            body += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def answer(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_closed_by_client(self, within: float = 2.0) -> None:
        """Until the client closes the connection: reads (and drops) whatever else it sends meanwhile."""
        async with asyncio.timeout(within):
            while await self.reader.read(65536):
                pass
        self.ended.set()

    def reset(self) -> None:
        """Close with a TCP reset rather than a FIN."""
        self.writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.writer.transport.abort()


Serve = Callable[[Peer], Awaitable[None]]


@dataclass
class Gauge:
    now: int = 0
    most: int = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            yield
        finally:
            self.now -= 1


class WireServer:
    """An HTTP/1.1 server on a raw socket; `serve` speaks for it on each connection it accepts."""

    def __init__(self, serve: Serve, host: str = "127.0.0.1") -> None:
        self._serve = serve
        self.host = host
        self.port = 0
        self.peers: list[Peer] = []
        self.requests: list[Request] = []
        self.fragments: list[bytes] = []  # bytes of request heads never finished
        self.busy = Gauge()  # requests in hand, kept by `answer_slowly`
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []
        self._server: asyncio.Server | None = None

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers) + 1, reader, writer)
        self.peers.append(peer)
        try:
            await self._serve(peer)
            writer.close()  # after what was written has gone
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            writer.transport.abort()  # the client went away mid-request, or the test is over
        except BaseException as exc:
            writer.transport.abort()
            self._errors.append(exc)
        finally:
            self._tasks.discard(task)

    async def __aenter__(self) -> WireServer:
        self._server = await asyncio.start_server(self._connected, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self._errors and exc_info[0] is None:
            raise self._errors[0]

    async def until(self, condition: Callable[[], bool], within: float = 2.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.005)


def http_answer(status: int = 200, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole answer with a Content-Length."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{n}: {v}" for n, v in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer_each(data: bytes) -> Serve:
    """Every request on every connection answered with `data`, until the client closes."""

    async def serve(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.answer(data)

    return serve


def answer_slowly(delay: float, busy: Gauge | None = None) -> Serve:
    """Every request answered `delay` seconds after it came, counting the requests in hand (on the server's own
    gauge unless given one)."""

    async def serve(peer: Peer) -> None:
        while await peer.request() is not None:
            with (busy or peer.server.busy).held():
                await asyncio.sleep(delay)
            await peer.answer(http_answer(200, b"ok"))

    return serve


async def never_answer(peer: Peer) -> None:
    await peer.request()
    await asyncio.sleep(3600)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def web_server(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An aiohttp.web server answering every method and path with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def post(
    sender: Sender, url: str, body: bytes = b"{}", timeout: float = 2.0, headers: dict[str, str] | None = None
) -> SendResult:
    return await sender.send("POST", url, body=body, headers=headers or {}, timeout=timeout)


def _assert_failed(result: SendResult, outcome: str) -> None:
    assert (result.status, result.outcome, result.ok) == (None, outcome, False), result
    assert result.error, "a failure says what went wrong"


# ---------------------------------------------------------------------------------------------------------------
# Answers: status, outcome, body, headers


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_a_2xx_answer_is_a_success(sender: Sender, status: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=b"" if status == 204 else b"fine")

    async with web_server(handler) as base:
        result = await post(sender, base + "/api/events")
    assert (result.status, result.outcome, result.ok) == (status, "Succeeded", True)
    assert result.body == (b"" if status == 204 else b"fine")
    assert result.error is None and result.truncated is False


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, "BadRequest"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "NotFound"),
        (408, "TimedOut"),
        (413, "PayloadTooLarge"),
        (429, "Busy"),
        (500, "GenericError"),
        (503, "Busy"),
        (206, "GenericError"),  # a 2xx past 204 is not a success to Event Grid
    ],
)
async def test_an_answer_s_status_is_told_with_event_grid_s_outcome(sender: Sender, status: int, outcome: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=b"why not", headers={"Retry-After": "3"})

    async with web_server(handler) as base:
        result = await post(sender, base + "/api/events")
    assert (result.status, result.outcome, result.ok) == (status, outcome, False)
    assert result.body == b"why not"
    assert result.headers is not None and result.headers["Retry-After"] == "3"


async def test_the_answer_s_body_and_headers_come_back_with_header_names_as_sent(sender: Sender) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=b'{"validationResponse": "512d38b6"}',
            headers={"WebHook-Allowed-Origin": "eventgrid.azure.net", "x-ms-request-ID": "r-1"},
            content_type="application/json",
        )

    async with web_server(handler) as base:
        result = await post(sender, base + "/")
    assert result.body == b'{"validationResponse": "512d38b6"}'
    assert result.headers is not None
    # Names exactly as the server wrote them; callers look them up without regard to case.
    assert result.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert result.headers["x-ms-request-ID"] == "r-1"
    assert {k.lower(): v for k, v in result.headers.items()}["content-type"].startswith("application/json")


async def test_interim_1xx_answers_are_passed_over_for_the_final_one(sender: Sender) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    async with WireServer(answer_each(interim + http_answer(202, b"queued"))) as server:
        result = await post(sender, server.url())
        again = await post(sender, server.url())
    assert (result.status, result.body, again.status) == (202, b"queued", 202)
    assert result.headers is not None and "Link" not in result.headers  # the interim answer's, not the final's


# ---------------------------------------------------------------------------------------------------------------
# The request as the server sees it


async def test_the_server_sees_the_request_exactly_as_the_caller_made_it(sender: Sender) -> None:
    body = bytes(range(256)) * 400 + "é✓".encode()  # not UTF-8 as a whole, longer than one socket write
    headers = {
        "Content-Type": "application/cloudevents-batch+json; charset=utf-8",
        "aeg-event-type": "Notification",
        "aeg-delivery-count": "0",
        "aeg-subscription-name": "SUB-1",
        "aeg-metadata-version": "1",
        "Authorization": "Bearer eyJ0eXAi.x.y",
        "X-Mixed-CASE-Name": "Kept As Is",
    }
    # Query strings carry function keys (base64: '+', '/', '=' escaped).
    path = "/api/updates?code=ab%2Bc%3D%3D&x=a+b&y=%26%25"
    async with WireServer(answer_each(http_answer(200))) as server:
        result = await sender.send("POST", server.url(path), body=body, headers=headers, timeout=2.0)
    assert result.ok, result
    [seen] = server.requests
    assert (seen.method, seen.target, seen.version) == ("POST", path, "HTTP/1.1")
    assert seen.values("Host") == [f"127.0.0.1:{server.port}"]
    assert seen.values("Content-Length") == [str(len(body))]
    assert not seen.values("Transfer-Encoding")
    for name, value in headers.items():
        assert [(n, v) for n, v in seen.headers if n.lower() == name.lower()] == [(name, value)], name
    assert seen.body == body


async def test_the_request_target_is_sent_as_written_in_the_url(sender: Sender) -> None:
    # An escaped reserved character is not the same as the character (RFC 3986 2.2, 6.2.2.2): servlet
    # containers take a bare ';' in a path for a path parameter, '%3B' for a character of a segment's name.
    target = "/hooks/a%3Bb%3Dc/d%40e?sig=x%2Fy%3Az&next=%3F"
    async with WireServer(answer_each(http_answer(200))) as server:
        result = await post(sender, server.url(target))
    assert result.ok, result
    assert server.requests[0].target == target


async def test_the_host_header_of_an_ipv6_literal_is_bracketed(sender: Sender) -> None:
    async with WireServer(answer_each(http_answer(200)), host="::1") as server:
        result = await post(sender, server.url("/x"))
    assert result.ok, result
    assert server.requests[0].values("Host") == [f"[::1]:{server.port}"]


async def test_an_empty_post_says_content_length_0(sender: Sender) -> None:
    # RFC 9110 8.6: a POST without content still says so; some servers answer 411 Length Required otherwise.
    async with WireServer(answer_each(http_answer(200))) as server:
        result = await post(sender, server.url(), body=b"")
    assert result.ok, result
    [seen] = server.requests
    assert (seen.values("Content-Length"), seen.body) == (["0"], b"")


async def test_the_webhook_handshake_options_has_no_body_and_its_allowed_origin_comes_back(sender: Sender) -> None:
    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        raw = [(n.decode(), v.decode()) for n, v in request.raw_headers]
        seen.append((request.method, raw, await request.read()))
        return web.Response(status=200, headers={"WebHook-Allowed-Origin": "eventgrid.azure.net"})

    async with web_server(handler) as base:
        result = await sender.send(
            "OPTIONS",
            base + "/api/events",
            body=b"",
            headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
            timeout=2.0,
        )
    assert result.ok, result
    assert result.headers is not None and result.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    [(method, raw, body)] = seen
    assert (method, body) == ("OPTIONS", b"")
    assert ("WebHook-Request-Origin", "eventgrid.azure.net") in raw
    assert ("WebHook-Request-Rate", "120") in raw
    assert [v for n, v in raw if n.lower() == "content-length"] in ([], ["0"])
    assert not [v for n, v in raw if n.lower() == "transfer-encoding"]


# ---------------------------------------------------------------------------------------------------------------
# Connections: kept, shared, bounded


async def test_sequential_sends_to_a_host_share_one_connection(sender: Sender) -> None:
    answers = [http_answer(200, b"a"), http_answer(204), http_answer(500, b"oops"), http_answer(404)]

    async def serve(peer: Peer) -> None:
        n = 0
        while await peer.request() is not None:
            await peer.answer(answers[n % len(answers)])
            n += 1

    async with WireServer(serve) as server:
        statuses = [(await post(sender, server.url(f"/e/{n}"))).status for n in range(20)]
    assert statuses == [200, 204, 500, 404] * 5
    assert server.accepted == 1  # an error status does not cost the connection either


async def test_concurrent_sends_to_a_host_open_no_more_than_its_share(make_sender: SenderFactory) -> None:
    sender = make_sender(max_connections_per_host=2)
    async with WireServer(answer_slowly(0.05)) as server:
        results = await asyncio.gather(*(post(sender, server.url(f"/{n}")) for n in range(10)))
    assert all(r.ok for r in results), results
    assert len(server.requests) == 10
    # Both of its connections used, never a third.
    assert (server.accepted, server.busy.most) == (2, 2)


async def test_all_hosts_together_stay_within_max_connections(make_sender: SenderFactory) -> None:
    sender = make_sender(max_connections=2)
    busy = Gauge()  # requests in hand at the three servers together
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(WireServer(answer_slowly(0.05, busy))) for _ in range(3)]
        results = await asyncio.gather(*(post(sender, s.url(f"/{n}")) for s in servers for n in range(3)))
    assert all(r.ok for r in results), results
    assert busy.most == 2


async def test_a_host_that_hangs_does_not_hold_up_another(make_sender: SenderFactory) -> None:
    sender = make_sender(max_connections_per_host=2)
    async with WireServer(never_answer) as stuck, WireServer(answer_each(http_answer(200, b"here"))) as fine:
        # More than its share: the third waits for one of the stuck host's connections.
        hanging = [asyncio.create_task(post(sender, stuck.url(), timeout=10.0)) for _ in range(3)]
        await stuck.until(lambda: len(stuck.requests) == 2)
        result = await post(sender, fine.url())
        still_waiting = [not task.done() for task in hanging]  # theirs take 10 s: this one did not wait
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
    assert (result.status, result.body) == (200, b"here")
    assert all(still_waiting)
    assert stuck.accepted == 2


@pytest.mark.parametrize(
    ("answer", "then"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "closes"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "lingers"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "lingers"),
    ],
    ids=["connection-close", "connection-close-lingering", "http-1.0-lingering"],
)
async def test_a_connection_the_server_said_it_would_close_is_not_used_again(
    sender: Sender, answer: bytes, then: str
) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        await peer.answer(answer)
        if then == "lingers":  # open, but never reading another request: one sent here would never be answered
            await asyncio.sleep(3600)

    async with WireServer(serve) as server:
        first = await post(sender, server.url())
        second = await post(sender, server.url(), timeout=1.0)
    assert (first.status, second.status) == (200, 200), second
    assert [r.connection for r in server.requests] == [1, 2]


async def test_a_connection_the_server_dropped_while_idle_is_not_used_again(sender: Sender) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        await peer.answer(http_answer(200))
        await asyncio.sleep(0.05)  # the server's idle timeout, without a word to the client

    async with WireServer(serve) as server:
        first = await post(sender, server.url())
        await asyncio.sleep(0.2)
        second = await post(sender, server.url())
    assert (first.status, second.status) == (200, 200), second
    assert server.accepted == 2


async def test_a_post_on_a_kept_alive_connection_the_server_had_closed_is_sent_again_once(sender: Sender) -> None:
    # The race of every keep-alive client: the server ends an idle connection just as a request goes out on it.
    # Nothing of an answer came, so the POST goes once more on a fresh connection.
    async def serve(peer: Peer) -> None:
        if peer.number == 1:
            await peer.request()
            await peer.answer(http_answer(200, b"first"))
            await peer.request()
            return  # closed without a word
        while await peer.request() is not None:
            await peer.answer(http_answer(200, b"second"))

    async with WireServer(serve) as server:
        first = await post(sender, server.url(), body=b"1")
        second = await post(sender, server.url(), body=b"2")
    assert (first.body, second.body) == (b"first", b"second"), second
    assert [(r.connection, r.body) for r in server.requests] == [(1, b"1"), (1, b"2"), (2, b"2")]


async def test_a_request_is_sent_at_most_twice_however_its_connections_fail(sender: Sender) -> None:
    async def serve(peer: Peer) -> None:
        if peer.number == 1:
            await peer.request()
            await peer.answer(http_answer(200))
        await peer.request()  # then closed without a word, on every connection

    async with WireServer(serve) as server:
        await post(sender, server.url(), body=b"1")
        result = await post(sender, server.url(), body=b"2")
    _assert_failed(result, "SocketError")
    assert 1 <= [r.body for r in server.requests].count(b"2") <= 2


async def test_a_late_answer_is_never_taken_for_the_next_request_s(make_sender: SenderFactory) -> None:
    # One connection for the host: a sender that put the timed-out request's connection back would read the
    # late answer as the next request's.
    sender = make_sender(max_connections_per_host=1)

    async def serve(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"slow":
                await asyncio.sleep(0.4)
                await peer.answer(http_answer(500, b"late"))
            else:
                await peer.answer(http_answer(200, b"fresh"))

    async with WireServer(serve) as server:
        slow = await post(sender, server.url(), body=b"slow", timeout=0.2)
        fresh = await post(sender, server.url(), body=b"next")
    _assert_failed(slow, "TimedOut")
    assert (fresh.status, fresh.body) == (200, b"fresh"), fresh
    assert [r.connection for r in server.requests] == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# Answer bodies


BODY = bytes(n % 251 for n in range(40_000))


def _chunked(body: bytes, sizes: Iterable[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        at += size
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "framed", "close"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n", BODY, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(BODY, [1, 4000, 17, 30000, 9000]), False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", BODY, True),
        (b"HTTP/1.0 200 OK\r\n\r\n", BODY, True),
    ],
    ids=["content-length", "chunked", "close-delimited", "http-1.0"],
)
async def test_an_answer_body_is_read_whole_in_every_framing(
    sender: Sender, head: bytes, framed: bytes, close: bool
) -> None:
    async def serve(peer: Peer) -> None:
        while await peer.request() is not None:
            # In pieces, so that the framing, not one read, decides where the body ends.
            for at in range(0, len(head + framed), 7000):
                await peer.answer((head + framed)[at : at + 7000])
                await asyncio.sleep(0.001)
            if close:
                return

    async with WireServer(serve) as server:
        result = await post(sender, server.url())
        again = await post(sender, server.url())
    assert (result.status, len(result.body), result.truncated) == (200, len(BODY), False)
    assert result.body == BODY and again.body == BODY
    assert server.accepted == (2 if close else 1)


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [("gzip", _gzip(BODY)), ("deflate", zlib.compress(BODY)), ("deflate", _raw_deflate(BODY))],
    ids=["gzip", "deflate", "deflate-without-zlib-header"],  # the last as some servers send it
)
async def test_a_compressed_answer_is_decoded(sender: Sender, encoding: str, packed: bytes) -> None:
    answer = http_answer(200, packed, [("Content-Encoding", encoding)])
    async with WireServer(answer_each(answer)) as server:
        result = await post(sender, server.url())
    assert (result.status, result.truncated) == (200, False)
    assert result.body == BODY


def _long_answer(framing: str) -> Serve:
    """The first request answered at more than the bound, any later one with b"next"."""
    long_body = bytes(n % 253 for n in range(MAX_RESPONSE_BYTES + 10_000))

    async def serve(peer: Peer) -> None:
        while await peer.request() is not None:
            if len(peer.server.requests) > 1:
                await peer.answer(http_answer(200, b"next"))
            elif framing == "content-length":
                await peer.answer(http_answer(200, long_body))
            elif framing == "chunked":
                await peer.answer(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(long_body, [5000] * 100)
                )
            elif framing == "close-delimited":
                await peer.answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + long_body)
                return
            else:  # endless: the client is to hang up long before the 160 MB that bounds it
                await peer.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(10_000):
                    await peer.answer(b"4000\r\n" + long_body[:0x4000] + b"\r\n")
                return

    return serve


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited", "endless"])
async def test_an_answer_longer_than_the_bound_is_cut_and_marked_truncated(sender: Sender, framing: str) -> None:
    long_body = bytes(n % 253 for n in range(MAX_RESPONSE_BYTES + 10_000))
    expected = (long_body[:0x4000] * 5)[:MAX_RESPONSE_BYTES] if framing == "endless" else long_body[:MAX_RESPONSE_BYTES]
    async with WireServer(_long_answer(framing)) as server:
        result = await post(sender, server.url(), timeout=2.0)
        # The rest was never read: the next request finds its way all the same.
        again = await post(sender, server.url())
    assert (result.status, result.outcome, result.truncated) == (200, "Succeeded", True), result
    assert result.body == expected
    assert again.body == b"next"


async def test_an_answer_of_exactly_the_bound_is_whole(sender: Sender) -> None:
    body = b"q" * MAX_RESPONSE_BYTES
    async with WireServer(answer_each(http_answer(200, body))) as server:
        result = await post(sender, server.url())
    assert (result.body == body, result.truncated) == (True, False)


@cache
def _gzip_bomb() -> bytes:
    """50 MB of zeros in about 50 KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(50)) + packer.flush()


async def test_a_gzip_bomb_is_cut_at_the_bound_not_inflated_whole(sender: Sender) -> None:
    answer = http_answer(200, _gzip_bomb(), [("Content-Encoding", "gzip")])
    async with WireServer(answer_each(answer)) as server:
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            result = await post(sender, server.url(), timeout=5.0)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            if not tracing:
                tracemalloc.stop()
    assert (result.status, result.truncated) == (200, True), result
    assert result.body == bytes(MAX_RESPONSE_BYTES)
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB held at once"  # inflated whole, it would be 50


# ---------------------------------------------------------------------------------------------------------------
# Time limits


async def test_a_server_that_never_answers_times_out(sender: Sender) -> None:
    async with WireServer(never_answer) as server:
        started = time.monotonic()
        result = await post(sender, server.url(), timeout=0.3)
        elapsed = time.monotonic() - started
    _assert_failed(result, "TimedOut")
    assert 0.25 <= elapsed < 1.3


@pytest.mark.parametrize("stall", ["after-the-head", "trickling"])
async def test_an_answer_whose_body_does_not_come_in_time_times_out(sender: Sender, stall: str) -> None:
    # The limit is on the whole exchange: a body trickled a byte at a time never resets it.
    async def serve(peer: Peer) -> None:
        await peer.request()
        if stall == "after-the-head":
            await peer.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            await asyncio.sleep(3600)
        await peer.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            await peer.answer(b"1\r\nx\r\n")
            await asyncio.sleep(0.05)

    async with WireServer(serve) as server:
        started = time.monotonic()
        result = await post(sender, server.url(), timeout=0.3)
        elapsed = time.monotonic() - started
    _assert_failed(result, "TimedOut")
    assert 0.25 <= elapsed < 1.3


# ---------------------------------------------------------------------------------------------------------------
# Failures


async def test_a_closed_port_is_a_socket_error(sender: Sender) -> None:
    _assert_failed(await post(sender, f"http://127.0.0.1:{closed_port()}/"), "SocketError")


async def test_an_unresolvable_host_is_a_resolution_error(sender: Sender) -> None:
    _assert_failed(await post(sender, "http://no-such-host.invalid/api/events"), "ResolutionError")


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_server_that_hangs_up_without_answering_is_a_socket_error(sender: Sender, how: str) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        if how == "reset":
            peer.reset()

    async with WireServer(serve) as server:
        result = await post(sender, server.url())
    _assert_failed(result, "SocketError")
    assert server.accepted == 1  # a fresh connection that failed is not tried again


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["short-of-its-length", "chunked-without-its-end", "head-cut"],
)
async def test_an_answer_cut_short_is_a_socket_error(sender: Sender, answer: bytes) -> None:
    # A delivery is a success only once its answer is whole; a broken one is tried again later.
    async def serve(peer: Peer) -> None:
        await peer.request()
        await peer.answer(answer)

    async with WireServer(serve) as server:
        result = await post(sender, server.url())
    _assert_failed(result, "SocketError")


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", b"\x00\xff" * 200 + b"\r\n\r\n"],
    ids=["another-protocol", "status-out-of-range", "binary"],
)
async def test_garbage_instead_of_http_is_a_socket_error(sender: Sender, garbage: bytes) -> None:
    async with WireServer(answer_each(garbage)) as server:
        result = await post(sender, server.url())
    _assert_failed(result, "SocketError")


async def test_an_answer_sent_before_the_request_s_body_is_all_sent_is_still_told(sender: Sender) -> None:
    # A server may refuse a large POST on its head alone: its 413 is the outcome, not the broken upload.
    body = b"e" * (8 << 20)

    async def serve(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.answer(http_answer(413, b"too large", [("Connection", "close")]))
        peer.writer.write_eof()
        await peer.wait_closed_by_client(within=5.0)

    async with WireServer(serve) as server:
        result = await post(sender, server.url(), body=body, timeout=5.0)
    assert (result.status, result.outcome, result.body) == (413, "PayloadTooLarge", b"too large"), result


# ---------------------------------------------------------------------------------------------------------------
# Header injection


@pytest.mark.parametrize("value", ["v\r\nX-Forged: 1", "v\nX-Forged: 1", "v\rX-Forged: 1", "v\x00X-Forged: 1"])
async def test_a_header_value_with_a_line_break_is_refused(sender: Sender, value: str) -> None:
    # Delivery attribute values come from events: a line break in one must not become a header of its own.
    async with WireServer(answer_each(http_answer(200))) as server:
        result = await post(sender, server.url(), headers={"X-Attr": value})
        after = await post(sender, server.url())
    _assert_failed(result, "GenericError")
    assert [r.values("X-Attr") for r in server.requests] == [[]]  # only the request after it
    assert not any(b"X-Forged" in fragment for fragment in server.fragments)
    assert after.ok


@pytest.mark.parametrize("name", ["X-Forged:A", "X Forged", "X-Forged\t"])
async def test_a_header_name_that_is_no_token_is_refused(sender: Sender, name: str) -> None:
    async with WireServer(answer_each(http_answer(200))) as server:
        result = await sender.send("POST", server.url(), body=b"{}", headers={name: "1"}, timeout=2.0)
        after = await post(sender, server.url())
    _assert_failed(result, "GenericError")
    assert len(server.requests) == 1 and not server.fragments
    assert after.ok


# ---------------------------------------------------------------------------------------------------------------
# TLS and redirects


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate that signs itself, for a name that is not the server's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-this-host.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("not-this-host.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("self-signed")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


async def test_https_to_a_self_signed_certificate_is_accepted(sender: Sender, self_signed: tuple[Path, Path]) -> None:
    # Local apps serve certificates of their own making; the emulator delivers to them (Azure would not).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    seen: list[tuple[str, str, str | None, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, request.headers.get("aeg-event-type"), await request.read()))
        return web.Response(status=202, body=b"secure", headers={"X-Answer": "yes"})

    async with web_server(handler, context) as base:
        assert base.startswith("https://")
        result = await post(
            sender, base + "/hook?k=1", body=b'[{"id": "1"}]', headers={"aeg-event-type": "Notification"}
        )
        again = await post(sender, base + "/hook?k=1")
    assert (result.status, result.body) == (202, b"secure"), result
    assert result.headers is not None and result.headers["X-Answer"] == "yes"
    assert seen[0] == ("POST", "/hook?k=1", "Notification", b'[{"id": "1"}]')
    assert again.status == 202


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_told_not_followed(sender: Sender, status: int) -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    async with web_server(handler) as base:
        result = await post(sender, base + "/hook")
    assert (result.status, result.outcome, result.ok) == (status, "GenericError", False)
    assert result.headers is not None and result.headers["Location"] == "/elsewhere"
    assert paths == ["/hook"]


# ---------------------------------------------------------------------------------------------------------------
# Cancellation and close


async def test_a_cancelled_send_raises_and_gives_its_connection_up(make_sender: SenderFactory) -> None:
    # One connection for the host: a send cancelled in flight or while waiting for it must leave it free.
    sender = make_sender(max_connections_per_host=1)

    async def serve(peer: Peer) -> None:
        if peer.number == 1:
            await peer.request()
            await peer.wait_closed_by_client()
            return
        while await peer.request() is not None:
            await peer.answer(http_answer(200, b"after"))

    async with WireServer(serve) as server:
        in_flight = asyncio.create_task(post(sender, server.url(), body=b"1", timeout=10.0))
        await server.until(lambda: len(server.requests) == 1)
        waiting = asyncio.create_task(post(sender, server.url(), body=b"2", timeout=10.0))
        await asyncio.sleep(0.05)
        for task in (waiting, in_flight):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The connection with an answer still owed is closed, not kept for another request.
        await asyncio.wait_for(server.peers[0].ended.wait(), 1.0)
        result = await post(sender, server.url(), body=b"3")
    assert (result.status, result.body) == (200, b"after"), result
    assert [(r.connection, r.body) for r in server.requests] == [(1, b"1"), (2, b"3")]


async def test_close_closes_the_idle_connections(sender: Sender) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        await peer.answer(http_answer(200))
        await peer.wait_closed_by_client()

    async with WireServer(serve) as server:
        assert (await post(sender, server.url())).ok
        await sender.close()
        await asyncio.wait_for(server.peers[0].ended.wait(), 1.0)


async def test_close_is_harmless_unused_or_twice(make_sender: SenderFactory) -> None:
    sender = make_sender()
    await sender.close()
    await sender.close()
