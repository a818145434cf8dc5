"""SIP transactions (RFC 3261 section 17) with their timers, on real time: SIP's retransmissions pace a
network, not the simulation, so they run on the event loop whatever the call clock is.

Server side: a retransmitted request gets the last response again; a final non-2xx answer to an
INVITE is retransmitted (Timer G) until its ACK or Timer H; a non-INVITE transaction remembers its
answer for Timer J. A 2xx to an INVITE ends the transaction: the dialog retransmits it (section 13.3.1.4).
Client side: requests are retransmitted over UDP (Timers A and E), time out (Timers B and F), and an
INVITE's non-2xx final response is acknowledged here, also when it is retransmitted (Timer D).

Over TCP a transaction fails at once on a transport error (section 17.1.4): its request could not be
sent, or the connection it went down ended before the final answer; the transaction user treats that as
a 503 (section 8.1.3.1). A response that cannot be sent tells the server transaction's user (17.2.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from callgrid.sip.message import Request, Response, parse_name_addr, response_to
from callgrid.sip.transport import Address, Peer, SipTransport

T1, T2, T4 = 0.5, 4.0, 5.0
# RFC 3261 17.2.1: an INVITE not answered by its user within 200 ms gets a 100 (Trying) from here. Most
# calls ring sooner, and their 180 says the same: one message less each way for every call.
TRYING_AFTER = 0.2


def server_key(request: Request) -> tuple[str, str, str]:
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    return (via.branch, f"{via.host}:{via.port or 5060}", method)


@dataclass
class ServerTransaction:
    layer: TransactionLayer
    request: Request
    peer: Peer
    key: tuple[str, str, str]
    last: Response | None = None
    acked: bool = False
    done: bool = False
    # The transaction user's ear for a response that could not be sent (the caller's connection is gone).
    on_failure: Callable[[], None] | None = None
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)
    _trying: asyncio.TimerHandle | None = None

    @property
    def final(self) -> bool:
        return self.last is not None and self.last.status >= 200

    def _send(self, response: Response) -> None:
        if self.peer.transport == "UDP":
            self.layer.transport.send(response, self.peer)
            return
        # RFC 3261 18.2.2: the connection the request came on, else a new one to its Via's sent-by port.
        try:
            port = self.request.top_via.port or 5060
        except ValueError:
            port = 5060
        self.layer.transport.send(response, self.peer, reconnect=(self.peer.host, port), on_error=self._failed)

    def _failed(self) -> None:
        self.layer.count("responseTransportError")
        if self.on_failure is not None:
            self.on_failure()

    def trying_later(self) -> None:
        """A 100 (Trying) unless the transaction user answers within TRYING_AFTER."""
        self._trying = asyncio.get_running_loop().call_later(TRYING_AFTER, self._send_trying)

    def _send_trying(self) -> None:
        self._trying = None
        if self.last is None and not self.done:
            self.reply(100)

    def respond(self, response: Response) -> None:
        if self.final:
            return  # a transaction has one final answer
        if self._trying is not None:
            self._trying.cancel()
            self._trying = None
        self.last = response
        self._send(response)
        if response.status < 200:
            return
        loop = asyncio.get_running_loop()
        reliable = self.peer.transport != "UDP"
        if self.request.method == "INVITE":
            if response.status < 300:
                self._end()
                return
            if not reliable:
                self._retransmit_g(self.layer.t1)
            self._timers.append(loop.call_later(64 * self.layer.t1, self._end))  # Timer H
        else:
            self._timers.append(loop.call_later(0 if reliable else 64 * self.layer.t1, self._end))  # Timer J

    def reply(self, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
        response = response_to(self.request, status, reason, to_tag=to_tag)
        self.respond(response)
        return response

    def _retransmit_g(self, interval: float) -> None:
        def fire() -> None:
            if self.acked or self.done or self.last is None:
                return
            self._send(self.last)
            self._retransmit_g(min(interval * 2, T2))

        self._timers.append(asyncio.get_running_loop().call_later(interval, fire))

    def retransmitted(self) -> None:
        self.layer.count("retransmissionsReceived")
        if self.last is not None:
            self._send(self.last)
        elif self.request.method == "INVITE":
            self.reply(100)  # retransmitting before the 200 ms are up: it is in a hurry to hear one

    def ack(self) -> None:
        self.acked = True
        # Timer I: absorb ACK retransmissions for T4, then forget.
        self._timers.append(asyncio.get_running_loop().call_later(0 if self.peer.transport != "UDP" else T4, self._end))

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        if self._trying is not None:
            self._trying.cancel()
            self._trying = None
        for timer in self._timers:
            timer.cancel()
        self.layer.server.pop(self.key, None)


ResponseHandler = Callable[[Response], None]


@dataclass
class ClientTransaction:
    layer: TransactionLayer
    request: Request
    peer: Peer
    on_response: ResponseHandler
    on_timeout: Callable[[], None]
    on_transport_error: Callable[[], None] | None = None  # none: as a timeout
    reconnect: Address | None = None  # over TCP, where a new connection goes when the peer's has ended
    # The connection the request went down: the peer's, or the new one to `reconnect` (its loss fails the
    # transaction as the peer's would; it once waited for Timer B / F instead).
    sent_on: Address | None = None
    key: tuple[str, str] = ("", "")
    state: str = "calling"  # calling | proceeding | completed | terminated
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)
    _ack: Request | None = None

    def start(self) -> None:
        self.key = (self.request.top_via.branch, self.request.method)
        self.layer.client[self.key] = self
        self._send(self.request)
        loop = asyncio.get_running_loop()
        if self.peer.transport == "UDP":
            self._retransmit(self.layer.t1)
        self._timers.append(loop.call_later(64 * self.layer.t1, self._timed_out))  # Timer B / F

    def _retransmit(self, interval: float) -> None:
        def fire() -> None:
            if self.state == "calling" or (self.state == "proceeding" and self.request.method != "INVITE"):
                self._send(self.request)
                nxt = interval * 2 if self.request.method == "INVITE" else min(interval * 2, T2)
                self._retransmit(nxt)

        self._timers.append(asyncio.get_running_loop().call_later(interval, fire))

    def received(self, response: Response) -> None:
        if self.state in ("completed", "terminated"):
            if self._ack is not None and response.status >= 300:
                self._send(self._ack, failing=False)  # a retransmitted final: ACK again
            return
        if response.status < 200:
            if self.request.method == "INVITE" and self.state == "calling":
                # Proceeding: no more retransmissions, and no Timer B (the far end rings as long as it likes).
                for timer in self._timers:
                    timer.cancel()
                self._timers.clear()
            self.state = "proceeding"
            self.on_response(response)
            return
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self.request.method == "INVITE" and response.status >= 300:
            self._ack = self._non_2xx_ack(response)
            self._send(self._ack, failing=False)
            self.state = "completed"
            wait = 32.0 if self.peer.transport == "UDP" else 0.0  # Timer D
            self._timers.append(asyncio.get_running_loop().call_later(wait, self._terminate))
        else:
            self.state = "terminated"
            self._terminate()
        self.on_response(response)

    def _send(self, message: Request, *, failing: bool = True) -> None:
        if self.peer.transport == "UDP":
            self.layer.transport.send(message, self.peer)
        else:
            on_error = self.transport_error if failing else None
            sent_on = self.layer.transport.send(message, self.peer, reconnect=self.reconnect, on_error=on_error)
            if message is self.request:
                self.sent_on = sent_on

    def transport_error(self) -> None:
        """The request could not be sent, or its connection ended before the final answer."""
        if self.state not in ("calling", "proceeding"):
            return
        self.state = "terminated"
        self._terminate()
        self.layer.count("transportErrors")
        (self.on_transport_error or self.on_timeout)()

    def _non_2xx_ack(self, response: Response) -> Request:
        ack = Request(method="ACK", uri=self.request.uri)
        ack.add("Via", self.request.get_all("Via")[0])
        for name in ("From", "Call-ID", "Route"):
            value = self.request.get(name)
            if value is not None:
                ack.add(name, value)
        ack.add("To", response.get("To") or self.request.get("To") or "")
        ack.add("CSeq", f"{self.request.cseq[0]} ACK")
        ack.add("Max-Forwards", "70")
        return ack

    def _timed_out(self) -> None:
        if self.state in ("calling", "proceeding"):
            self.state = "terminated"
            self._terminate()
            self.on_timeout()

    def _terminate(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.layer.client.pop(self.key, None)


class TransactionLayer:
    """Matches messages to transactions; what matches none goes to the transaction user (the trunk)."""

    def __init__(self, transport: SipTransport, count: Callable[[str], None], *, t1: float = T1) -> None:
        self.transport = transport
        self.count = count
        # T1 may be set (RFC 3261 17.1.1.1 allows it): Timers A, B, E, F, G, H and J scale with it, so a
        # smaller one makes a trunk that never answers fail over sooner.
        self.t1 = t1
        self.server: dict[tuple[str, str, str], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        transport.on_lost = self.connection_lost

    def connection_lost(self, peer: Peer) -> None:
        """A TCP connection ended: the requests still waiting on it for a final answer will get none."""
        address = (peer.host, peer.port)
        for tx in [tx for tx in self.client.values() if tx.peer == peer or tx.sent_on == address]:
            tx.transport_error()

    def match_request(self, request: Request, peer: Peer) -> tuple[ServerTransaction | None, bool]:
        """(transaction, is_new): a retransmission is answered here and returns (tx, False); an ACK to a
        non-2xx final returns (tx, False); a new request gets a new transaction (ACKs to 2xx get none)."""
        key = server_key(request)
        existing = self.server.get(key)
        if request.method == "ACK":
            if existing is not None and existing.final and existing.last is not None and existing.last.status >= 300:
                existing.ack()
                return existing, False
            return None, True
        if existing is not None:
            existing.retransmitted()
            return existing, False
        tx = ServerTransaction(self, request, peer, key)
        self.server[key] = tx
        return tx, True

    def invite_of_cancel(self, cancel: Request) -> ServerTransaction | None:
        via = cancel.top_via
        return self.server.get((via.branch, f"{via.host}:{via.port or 5060}", "INVITE"))

    def match_response(self, response: Response) -> ClientTransaction | None:
        try:
            key = (response.top_via.branch, response.cseq[1])
        except ValueError:
            return None
        return self.client.get(key)

    def request(
        self,
        request: Request,
        peer: Peer,
        on_response: ResponseHandler,
        on_timeout: Callable[[], None],
        *,
        on_transport_error: Callable[[], None] | None = None,
        reconnect: Address | None = None,
    ) -> ClientTransaction:
        tx = ClientTransaction(self, request, peer, on_response, on_timeout, on_transport_error, reconnect)
        tx.start()
        return tx

    def tag_of(self, header: str | None) -> str | None:
        if header is None:
            return None
        try:
            return parse_name_addr(header).tag
        except ValueError:
            return None
