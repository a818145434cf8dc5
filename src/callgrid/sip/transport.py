"""SIP over UDP and TCP on one port (RFC 3261 section 18): messages in, framed and parsed; messages out,
to a peer's address, back down the TCP connection it came on, or down one callgrid opened to a trunk.

A TCP connection the peer closed or reset is never written into: a message for it goes down a new
connection to the address its sender gave for that (the trunk's own address, a response's Via sent-by,
a dialog's remote target; RFC 3261 18.1.1 and 18.2.2), or fails, and the sender hears of the failure
(a transport error, which RFC 3261 8.1.3.1 treats as a 503). The transaction layer hears of every
connection that ends, so that requests still waiting for an answer on it fail at once.

A datagram or TCP message that does not parse is answered 400 when it is a request whose Via, From,
To, Call-ID and CSeq can still be read (so the sender stops retransmitting), else dropped; either way
counted. A TCP peer that sends more than MAX_MESSAGE without a message's end is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from callgrid.sip.message import MAX_MESSAGE, Message, Request, Response, SipParseError, parse

log = logging.getLogger(__name__)

TCP_IDLE_SECONDS = 600.0
CONNECT_SECONDS = 5.0


@dataclass(frozen=True)
class Peer:
    transport: str  # "UDP" | "TCP"
    host: str
    port: int


Handler = Callable[[Request | Response, Peer], None]
Counter = Callable[[str], None]
Address = tuple[str, int]


class SipTransport:
    def __init__(self, host: str, port: int, handler: Handler, count: Counter) -> None:
        self.host, self.port = host, port
        self._handler, self._count = handler, count
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[Address, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._connecting: dict[Address, asyncio.Future[bool]] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Told of each TCP connection that ended (the peer closed or reset it, or it idled out).
        self.on_lost: Callable[[Peer], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(self.host, self.port))
        if self.port == 0:
            self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, limit=MAX_MESSAGE + 1)

    async def stop(self) -> None:
        self._stopping = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for _, writer in list(self._connections.values()):
            writer.close()
        for task in list(self._readers):
            task.cancel()
        for task in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def send(
        self,
        message: Message,
        peer: Peer,
        *,
        reconnect: Address | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> Address | None:
        """Send to `peer`; over TCP without a live connection to it, down a new one to `reconnect` (none:
        the send fails). `on_error` hears of a failure, later, never from inside this call. Returns the
        address of the connection the message goes down (whose loss `on_lost` will name), None if none."""
        data = message.encode()
        if peer.transport != "TCP":
            if self._udp is not None:
                self._udp.sendto(data, (peer.host, peer.port))
            return (peer.host, peer.port)
        writer = self._live((peer.host, peer.port))
        if writer is not None:
            writer.write(data)
            return (peer.host, peer.port)
        if reconnect is not None:
            task = asyncio.ensure_future(self._send_new(data, reconnect, on_error))
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)
            return reconnect
        self._count("sendFailed")
        if on_error is not None:
            asyncio.get_running_loop().call_soon(on_error)
        return None

    def _live(self, address: Address) -> asyncio.StreamWriter | None:
        entry = self._connections.get(address)
        if entry is None:
            return None
        reader, writer = entry
        # A peer's FIN may be in before the reader task has run: a half-closed connection takes no more.
        if writer.is_closing() or reader.at_eof():
            return None
        return writer

    async def _send_new(self, data: bytes, address: Address, on_error: Callable[[], None] | None) -> None:
        self._count("reconnects")
        writer = self._live(address) if await self.connect(*address) else None
        if writer is None:
            self._count("sendFailed")
            if on_error is not None:
                on_error()
            return
        writer.write(data)

    def received(self, data: bytes, peer: Peer) -> None:
        if not data.strip():
            return  # keep-alive (RFC 5626 CRLF)
        try:
            message = parse(data)
        except SipParseError as exc:
            self._count("malformed")
            self._answer_malformed(data, peer, str(exc))
            return
        try:
            self._handler(message, peer)
        except Exception:
            # One bad message must never stop the socket: counted, logged, and the next one is read.
            self._count("internalError")
            log.exception("handling a SIP message failed")

    def _answer_malformed(self, data: bytes, peer: Peer, why: str) -> None:
        text = data[:MAX_MESSAGE].decode("utf-8", "replace").replace("\r\n", "\n")
        lines = text.split("\n\n", 1)[0].split("\n")
        if not lines or not re.match(r"^[A-Z]+ \S+ SIP/2\.0$", lines[0].strip()) or lines[0].startswith("ACK "):
            return
        wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To"}
        wanted.update({"call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"})
        copied: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() in wanted:
                copied.append((wanted[name.strip().lower()], value.strip()))
        if {n for n, _ in copied} != {"Via", "From", "To", "Call-ID", "CSeq"}:
            return
        reason = "Bad Request (" + re.sub(r"[^ -~]", "", why)[:80] + ")"
        self.send(Response(headers=copied, status=400, reason=reason), peer)

    async def connect(self, host: str, port: int) -> bool:
        """A TCP connection to a trunk for the calls callgrid places (reused while it stays open: an SBC
        sees one connection, as it would from Azure); False when it cannot be opened."""
        if self._live((host, port)) is not None:
            return True
        # One connection per address: messages sent while it opens wait for it, in order.
        pending = self._connecting.get((host, port))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._connecting[(host, port)] = future
        try:
            future.set_result(await self._open(host, port))
        finally:
            del self._connecting[(host, port)]
            if not future.done():
                future.set_result(False)
        return future.result()

    async def _open(self, host: str, port: int) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_MESSAGE + 1), CONNECT_SECONDS
            )
        except (OSError, TimeoutError):
            self._count("connectFailed")
            return False
        peer = Peer("TCP", host, port)
        self._connections[(host, port)] = (reader, writer)
        task = asyncio.ensure_future(self._read_tcp(reader, writer, peer))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        return True

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        address = writer.get_extra_info("peername")
        peer = Peer("TCP", address[0], address[1])
        self._connections[(peer.host, peer.port)] = (reader, writer)
        try:
            await self._read_tcp(reader, writer, peer)
        finally:
            if task is not None:
                self._readers.discard(task)

    async def _read_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TCP_IDLE_SECONDS)
                if not head.strip():
                    continue  # CRLF keep-alives
                match = re.search(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d{1,6})[ \t]*\r?$", head, re.I | re.M)
                if match is None:
                    self._count("malformed")
                    self._answer_malformed(head, peer, "no Content-Length over TCP")
                    break
                length = int(match.group(1))
                if len(head) + length > MAX_MESSAGE:
                    self._count("malformed")
                    self._answer_malformed(head, peer, "message too large")
                    break
                body = await asyncio.wait_for(reader.readexactly(length), 30.0)
                self.received(head + body, peer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            raise
        finally:
            entry = self._connections.get((peer.host, peer.port))
            current = entry is not None and entry[1] is writer
            if current:
                del self._connections[(peer.host, peer.port)]
            writer.close()
            if current and not self._stopping and self.on_lost is not None:
                try:
                    self.on_lost(peer)
                except Exception:
                    self._count("internalError")
                    log.exception("handling a lost SIP connection failed")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._owner.received(data, Peer("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP error: %s", exc)
