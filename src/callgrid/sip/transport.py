"""SIP over UDP and TCP on one port (RFC 3261 section 18): messages in, framed and parsed; messages out,
to a peer's address, back down the TCP connection it came on, or down one callgrid opened to a trunk.

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


class SipTransport:
    def __init__(self, host: str, port: int, handler: Handler, count: Counter) -> None:
        self.host, self.port = host, port
        self._handler, self._count = handler, count
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(self.host, self.port))
        if self.port == 0:
            self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, limit=MAX_MESSAGE + 1)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._connections.values()):
            writer.close()
        for task in list(self._readers):
            task.cancel()
        for task in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def send(self, message: Message, peer: Peer) -> None:
        data = message.encode()
        if peer.transport == "TCP":
            writer = self._connections.get((peer.host, peer.port))
            if writer is None or writer.is_closing():
                self._count("sendFailed")
                return
            writer.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, (peer.host, peer.port))

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
        existing = self._connections.get((host, port))
        if existing is not None and not existing.is_closing():
            return True
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_MESSAGE + 1), CONNECT_SECONDS
            )
        except (OSError, TimeoutError):
            self._count("connectFailed")
            return False
        peer = Peer("TCP", host, port)
        self._connections[(host, port)] = writer
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
        self._connections[(peer.host, peer.port)] = writer
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
            if self._connections.get((peer.host, peer.port)) is writer:
                del self._connections[(peer.host, peer.port)]
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._owner.received(data, Peer("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP error: %s", exc)
