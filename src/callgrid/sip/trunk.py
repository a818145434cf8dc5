"""The SIP trunk: callgrid as the Direct Routing edge that an SBC, a softphone or a load tool talks to.

Inbound, an INVITE to a number the resource owns becomes a call from that PSTN caller (IncomingCall,
filters, the app's answer, redirect or reject); the caller hears 100 and 180 while it rings, 200 with
SDP when it connects, 486 / 403 / 603 when the app rejects it (busy / forbidden / none), 480 when
nobody answers in time; an INVITE without SDP gets our offer in the 200 and answers in its ACK.
Outbound, the call core hands over offers to public numbers that a SIP route matches
(`platform/trunk_port.py`), with the trunks to try in order; a trunk that answers 408 / 503 / 504, never
answers or cannot be reached passes the call to the next (not once it rang: a second phone must not
ring). The far end's 180, 200, 486, 603 or silence drive the same callbacks as a simulated device.
Connected legs carry G.711 RTP both ways through the media plane, RFC 4733 keys arriving as the keys the
recogniser collects.
Session timers (RFC 4028, `sip/session_timer.py`) end a connected leg whose far end has vanished: a
refresh that never comes, or one of ours that goes unanswered, is a BYE and, for the call core, the far
end's hang-up.

This is one way in beside the HTTP API: it uses the call core's own operations, each in its own
store transaction, and follows calls through `call_changed` after each commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from callgrid.errors import CallgridError, NotFound
from callgrid.media.codecs import Pcm
from callgrid.media.plane import TONE_KEYS
from callgrid.platform import sip_routing
from callgrid.platform.calls.models import Call, CallState, OfferState
from callgrid.platform.calls.results import BUSY, DECLINED, FORBIDDEN, UNREACHABLE, Result
from callgrid.platform.calls.service import parse_identifier
from callgrid.platform.trunk_port import TrunkLeg
from callgrid.sip import sdp
from callgrid.sip.message import (
    NameAddr,
    Request,
    Response,
    SipParseError,
    new_branch,
    new_tag,
    parse_name_addr,
    parse_uri,
    phone_number,
    response_to,
)
from callgrid.sip.rtp import RtpSession
from callgrid.sip.session_timer import (
    DEFAULT_SESSION_EXPIRES,
    MIN_SE_FLOOR,
    TIMER,
    UAC,
    UAS,
    Deadlines,
    Session,
    TooSmall,
    answer_of_response,
    answer_request,
    expiry_margin,
    option_tags,
    parse_min_se,
    supports_timer,
)
from callgrid.sip.transactions import T1, T2, ClientTransaction, ServerTransaction, TransactionLayer
from callgrid.sip.transport import Address, Peer, SipTransport

if TYPE_CHECKING:
    from callgrid.node import Node

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
MAX_SETTING_UP = 200
USER_AGENT = "callgrid"
_TONE_OF_KEY = {key: name for name, key in TONE_KEYS.items()}
# How an app's or a device's refusal of an inbound call reaches the caller (the call's end code -> SIP).
_REFUSAL = {486: 486, 403: 403, 603: 603, 408: 480, 480: 480, 487: 487}
# How the far end's refusal of an outbound call reaches the app.
_FAR_END = {486: BUSY, 600: BUSY, 603: DECLINED, 403: FORBIDDEN}
# The answers on which a call goes on to the next trunk of its routes (Azure's documented set), as long
# as the trunk had not started ringing (a 1xx beyond 100): a second trunk must not ring a second phone.
FAILOVER_STATUSES = frozenset({408, 503, 504})


@dataclass
class Leg:
    """One call leg over the trunk: the dialog, its RTP, and where the call core stands."""

    direction: str  # "inbound" | "outbound"
    raw_id: str  # the party on the trunk, as the call knows them (4:+1...)
    call_id: str
    local_tag: str
    local: NameAddr  # our From (outbound) or To (inbound), with our tag
    remote: NameAddr  # the far end's
    peer: Peer
    rtp: RtpSession
    server_call_id: str = ""
    offer_id: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    state: str = "ringing"  # ringing | answered (200 sent) | confirmed | ended
    invite_tx: ServerTransaction | None = None  # inbound
    invite_client: ClientTransaction | None = None  # outbound
    invite: Request | None = None  # outbound: the INVITE we sent
    provisional: bool = False  # outbound: a 1xx came, so a CANCEL may go
    early: bool = False  # outbound: the far end rang (a 1xx beyond 100): no failover after that
    plan: TrunkLeg | None = None  # outbound: the offer, with the trunks still to try
    attempt: int = 0  # outbound: which of the plan's trunks this leg went to
    late_offer: bool = False  # our 200 carried the offer (an INVITE without SDP): the ACK answers
    cancel_wanted: bool = False
    answer: Response | None = None  # inbound: the 200 retransmitted until ACK
    keys: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: float = field(default_factory=time.monotonic)
    detach_media: Callable[[], None] | None = None  # the leg's ears in the media plane, once attached
    local_sdp: bytes = b""  # our session description as last sent (a re-INVITE refresh repeats it)
    origin: sdp.Origin = field(default_factory=sdp.Origin)  # its o= line: one session id, counted versions
    allows_update: bool = False  # the far end's Allow names UPDATE: our refreshes go as UPDATE
    # RFC 4028 session timer (sip/session_timer.py); an interval of 0: none.
    session_interval: int = 0
    we_refresh: bool = False
    session_expires_at: float = 0.0  # on the node's clock
    refreshing: bool = False  # our refresh is out and unanswered
    session_answer: Session | None = None  # inbound: what our 200 to the INVITE says
    session_require: bool = False  # inbound: the caller supports timers, so our 200 requires them
    session_retried: bool = False  # outbound: a 422 had us ask again with a longer interval

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    @property
    def reconnect(self) -> Address | None:
        """Over TCP, where a request in this dialog goes once the connection it used has ended (RFC 3261
        18.1.1): the trunk's own address for a call we placed; the remote target (the caller's Contact)
        for one that came in, since the connection it came on was from a port nobody listens on."""
        if self.peer.transport != "TCP":
            return None
        if self.direction == "outbound":
            return (self.peer.host, self.peer.port)
        try:
            uri = parse_uri(self.remote_target or self.remote.uri)
        except SipParseError:
            return None
        if not uri.host:
            return None
        return (uri.host.strip("[]"), uri.port or 5060)


def _e164_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return phone_number(parse_name_addr(value).uri)
    except SipParseError:
        return None


class SipTrunk:
    """The node's SIP side (implements `platform.trunk_port.TrunkPort`)."""

    def __init__(
        self,
        node: Node,
        *,
        host: str,
        port: int,
        allow: list[str],
        outbound: str = "UDP",
        t1: float = T1,
        session_expires: int = DEFAULT_SESSION_EXPIRES,
        min_se: int = MIN_SE_FLOOR,
    ) -> None:
        self.node = node
        self.bind_host = host
        self.host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.counters: Counter[str] = Counter()
        self.transport = SipTransport(host, port, self._on_message, self.count)
        self.layer = TransactionLayer(self.transport, self.count, t1=t1)
        if outbound.upper() not in ("UDP", "TCP"):
            raise ValueError(f"SIP transport for calls to the trunks: UDP or TCP, not {outbound!r}")
        self.outbound = outbound.upper()  # calls callgrid places leave over this transport
        self.allowed_networks = [ipaddress.ip_network(n.strip(), strict=False) for n in allow if n.strip()]
        self.dialogs: dict[tuple[str, str], Leg] = {}
        self.by_call: dict[str, list[Leg]] = {}
        self._revisions: dict[str, int] = {}  # the newest snapshot followed, per call with legs here
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resolved: dict[str, tuple[float, list[str]]] = {}
        self._trunk_addresses: set[str] = set()
        self._setting_up = 0  # inbound INVITEs between their 100 and the call being placed
        # RFC 4028: the interval offered and the longest accepted (0: no session timers), and the shortest.
        if session_expires and not MIN_SE_FLOOR <= min_se <= session_expires:
            raise ValueError(f"SIP session timers: {MIN_SE_FLOOR} <= Min-SE ({min_se}) <= Session-Expires")
        self.session_expires = session_expires
        self.min_se = min_se
        # Each leg's next refresh or expiry, on the node's clock (a virtual one runs them in milliseconds).
        self.session_timers: Deadlines[tuple[str, str]] = Deadlines(node.clock, self._session_due, count=self.count)

    @property
    def port(self) -> int:
        return self.transport.port

    def count(self, name: str) -> None:
        self.counters[name] += 1

    async def start(self) -> None:
        await self.transport.start()
        self._spawn(self.session_timers.run())
        self.node.calls.trunk = self

    async def stop(self) -> None:
        self.node.calls.trunk = None
        for leg in list(self.dialogs.values()):
            self._close(leg)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transport.stop()

    def reset(self) -> None:
        """The node's state was reset: every leg ends (its call is gone)."""
        for leg in list(self.dialogs.values()):
            self._hang_up(leg, 480)
        self._trunk_addresses.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.count("internalError")
            log.error("SIP task failed", exc_info=task.exception())

    # ---- messages in ------------------------------------------------------------------------------

    def _on_message(self, message: Request | Response, peer: Peer) -> None:
        if isinstance(message, Response):
            self.count("responsesReceived")
            client = self.layer.match_response(message)
            if client is not None:
                client.received(message)
            else:
                self._stray_response(message)
            return
        self.count("requestsReceived")
        tx, new = self.layer.match_request(message, peer)
        if message.method == "ACK":
            if tx is None:
                self._ack(message)
            return
        if not new or tx is None:
            return
        method = message.method
        to_tag = message.tag("To")
        if to_tag is not None:
            self._in_dialog(tx, to_tag)
        elif method == "INVITE":
            # 100 unless the call rings within 200 ms (RFC 3261 17.2.1), or at once to a retransmission, so
            # the caller stops retransmitting while the call is set up; past MAX_SETTING_UP calls in set-up,
            # new ones are turned away until the platform catches up.
            if self._setting_up >= MAX_SETTING_UP:
                self.count("overloaded")
                response = response_to(message, 503, to_tag=new_tag())
                response.add("Retry-After", "1")
                tx.respond(response)
                return
            tx.trying_later()
            self._setting_up += 1
            self._spawn(self._inbound_invite(tx))
        elif method == "CANCEL":
            self._cancel(tx)
        elif method == "OPTIONS":
            self._options(tx)
        elif method in ("BYE", "UPDATE"):
            self.count("outOfDialog")
            tx.reply(481)
        elif method in ("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "NOTIFY", "PRACK", "INFO"):
            self._reply_allow(tx, 405)
        else:
            self._reply_allow(tx, 501)

    def _reply_allow(self, tx: ServerTransaction, status: int) -> None:
        response = response_to(tx.request, status, to_tag=new_tag())
        response.add("Allow", ALLOW)
        tx.respond(response)

    def _options(self, tx: ServerTransaction) -> None:
        if self._allowed(tx.peer.host):
            self._answer_options(tx)
        else:
            self._spawn(self._options_from_stranger(tx))

    async def _options_from_stranger(self, tx: ServerTransaction) -> None:
        if await self._peer_allowed(tx.peer.host):
            self._answer_options(tx)
            return
        self.count("rejectedPeer")
        tx.reply(403, "Forbidden (peer not allowed)", to_tag=new_tag())

    def _answer_options(self, tx: ServerTransaction) -> None:
        if self._bad_extension(tx, new_tag()):
            return
        response = response_to(tx.request, 200, to_tag=new_tag())
        response.add("Allow", ALLOW)
        response.add("Accept", "application/sdp")
        if self.session_expires:
            response.add("Supported", TIMER)
        response.add("Server", USER_AGENT)
        tx.respond(response)

    def _in_dialog(self, tx: ServerTransaction, to_tag: str) -> None:
        leg = self.dialogs.get((tx.request.call_id, to_tag))
        if leg is None or leg.state == "ended":
            self.count("outOfDialog")
            tx.reply(481)
            return
        method = tx.request.method
        # Require is looked at only for the methods we handle (RFC 3261 8.2: 405 comes first); OPTIONS looks
        # at it in its answer, CANCEL never.
        if method in ("BYE", "INVITE", "UPDATE", "INFO") and self._bad_extension(tx, leg.local_tag):
            return
        if method == "BYE":
            tx.reply(200)
            self.count("byeReceived")
            self._far_end_left(leg)
        elif method == "INVITE":
            self._reinvite(tx, leg)
        elif method == "UPDATE":
            self._update(tx, leg)
        elif method == "OPTIONS":
            self._options(tx)
        elif method == "INFO":
            self._info(tx, leg)
        elif method == "CANCEL":
            self._cancel(tx)
        else:
            self._reply_allow(tx, 405)

    def _bad_extension(self, tx: ServerTransaction, to_tag: str) -> bool:
        """RFC 3261 8.2.2.3: a request whose Require names option tags we do not support is refused 420,
        its Unsupported naming exactly those; True if it was. We support `timer` when session timers are
        on, and nothing else (no 100rel: PRACK is refused). CANCEL and ACK are never refused: their
        Require is to be ignored (RFC 3261 8.2.2.3, 9.2)."""
        if tx.request.method in ("CANCEL", "ACK"):
            return False
        supported = {TIMER} if self.session_expires else set()
        unsupported: dict[str, str] = {}  # lowercased -> as the request spelled it, in its order
        for tag in tx.request.get_all("Require"):
            tag = tag.strip()
            if tag and tag.lower() not in supported:
                unsupported.setdefault(tag.lower(), tag)
        if not unsupported:
            return False
        self.count("badExtension")
        refusal = response_to(tx.request, 420, to_tag=to_tag)
        refusal.add("Unsupported", ", ".join(unsupported.values()))
        tx.respond(refusal)
        return True

    def _reinvite(self, tx: ServerTransaction, leg: Leg) -> None:
        """Hold and resume (a=sendonly / inactive / sendrecv), or a new address: the RTP follows; the
        answer keeps our codec."""
        if leg.state not in ("confirmed", "answered"):
            tx.reply(491)
            return
        session = answer_request(tx.request, min_se=self.min_se, default=self.session_expires)
        if isinstance(session, TooSmall):
            self._too_small(tx, session, leg.local_tag)
            return
        response: Response | None
        if not tx.request.body:
            # Without SDP the re-INVITE asks for our offer (RFC 3261 14.2); its ACK carries the answer.
            leg.late_offer = True
            response = self._answer_response(tx.request, leg, offer=True)
        else:
            response = self._answer_offer(tx, leg)
            if response is None:
                return
        self._refreshed_by_peer(leg, tx.request, response, session)
        tx.respond(response)

    def _answer_offer(self, tx: ServerTransaction, leg: Leg) -> Response | None:
        """The 200 answering a re-INVITE's or UPDATE's offer (the RTP follows it), or None after a 488."""
        try:
            offer = sdp.parse(tx.request.body)
        except sdp.SdpError:
            tx.reply(488)
            return None
        codec = offer.codec()
        if codec is None:
            tx.reply(488)
            return None
        leg.rtp.set_remote(offer.host, offer.port, codec, offer.event_payload, offer.direction)
        return self._answer_response(tx.request, leg, direction=sdp.answer_direction(offer.direction))

    def _update(self, tx: ServerTransaction, leg: Leg) -> None:
        """RFC 3311 UPDATE: most often a session refresh without SDP (RFC 4028); with SDP, a new offer,
        answered as a re-INVITE's is (an early dialog's offer waits: 491)."""
        connected = leg.state in ("confirmed", "answered")
        if tx.request.body and not connected:
            tx.reply(491)
            return
        session = answer_request(tx.request, min_se=self.min_se, default=self.session_expires)
        if isinstance(session, TooSmall):
            self._too_small(tx, session, leg.local_tag)
            return
        response: Response | None
        if tx.request.body:
            response = self._answer_offer(tx, leg)
            if response is None:
                return
        else:
            response = response_to(tx.request, 200, to_tag=leg.local_tag)
            response.add("Contact", self._our_contact(leg))
            response.add("Allow", ALLOW)
            if self.session_expires:
                response.add("Supported", TIMER)
            response.add("Server", USER_AGENT)
        if connected:
            self._refreshed_by_peer(leg, tx.request, response, session)
        tx.respond(response)

    def _info(self, tx: ServerTransaction, leg: Leg) -> None:
        """SIP INFO DTMF (application/dtmf-relay `Signal=5`), which some SBCs send instead of RFC 4733."""
        content_type = (tx.request.get("Content-Type") or "").lower()
        if content_type.startswith(("application/dtmf-relay", "application/dtmf")):
            for line in tx.request.body.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition("=")
                key = value.strip().upper()
                if name.strip().lower() == "signal" and key in _TONE_OF_KEY:
                    self._key(leg, key)
                elif content_type.startswith("application/dtmf") and line.strip().upper() in _TONE_OF_KEY:
                    self._key(leg, line.strip().upper())
        tx.reply(200)

    def _cancel(self, tx: ServerTransaction) -> None:
        invite = self.layer.invite_of_cancel(tx.request)
        if invite is None or invite.final:
            self.count("outOfDialog")
            tx.reply(481)
            return
        tx.reply(200)
        self.count("cancelReceived")
        leg = next((leg for leg in self.dialogs.values() if leg.invite_tx is invite), None)
        invite.reply(487, to_tag=leg.local_tag if leg else new_tag())
        if leg is not None:
            self._far_end_left(leg)

    def _ack(self, ack: Request) -> None:
        leg = self.dialogs.get((ack.call_id, ack.tag("To") or ""))
        if leg is None or leg.state == "ended":
            return
        if leg.state == "answered":
            leg.state = "confirmed"
        if leg.late_offer:  # the answer to the offer in our 200 (to the INVITE or a re-INVITE)
            leg.late_offer = False
            self._late_answer(leg, ack)

    def _late_answer(self, leg: Leg, ack: Request) -> None:
        """The ACK's answer to the offer our 200 made; none we can use ends the call (RFC 3264 says the
        answer must come, and media cannot flow without it)."""
        try:
            answer = sdp.parse(ack.body)
            codec = answer.codec()
        except sdp.SdpError:
            codec = None
        if codec is None:
            self.count("badAnswerSdp")
            self._send_bye(leg)
            self._far_end_left(leg)
            return
        leg.rtp.set_remote(answer.host, answer.port, codec, answer.event_payload, answer.direction)

    def _stray_response(self, response: Response) -> None:
        """A 2xx to our INVITE retransmitted after its transaction ended: the ACK was lost, send it again."""
        if response.status < 200 or response.status >= 300 or response.cseq[1] != "INVITE":
            return
        leg = self.dialogs.get((response.call_id, response.tag("From") or ""))
        if leg is not None:
            self._send_ack(leg, response.cseq[0])

    # ---- peers ------------------------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        """A peer in --sip-allow's networks, or at a configured trunk's address (as last looked up)."""
        return self._in_networks(host) or host in self._trunk_addresses

    def _in_networks(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    async def _peer_allowed(self, host: str) -> bool:
        """As `_allowed`, with the trunks looked up again for a peer outside the networks: trunks come
        and go through SipRoutingClient."""
        if self._in_networks(host):
            return True
        await self._refresh_trunk_addresses()
        return host in self._trunk_addresses

    async def _refresh_trunk_addresses(self) -> None:
        """The configured trunks' addresses now (a removed trunk's address is no longer a peer)."""
        async with self.node.store.transaction() as tx:
            config = await sip_routing.get(tx)
        addresses: set[str] = set()
        for fqdn in config["trunks"]:
            addresses.update(await self._resolve(fqdn))
        self._trunk_addresses = addresses

    async def _resolve(self, fqdn: str) -> list[str]:
        cached = self._resolved.get(fqdn)
        if cached is not None and time.monotonic() - cached[0] < 30.0:
            return cached[1]
        if fqdn == "localhost" or fqdn.endswith(".localhost"):
            addresses = ["127.0.0.1"]  # RFC 6761: .localhost names are loopback, without asking DNS
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(fqdn, None, type=socket.SOCK_DGRAM)
                addresses = sorted({str(info[4][0]) for info in infos})
            except OSError:
                addresses = []
        self._resolved[fqdn] = (time.monotonic(), addresses)
        return addresses

    # ---- inbound calls ----------------------------------------------------------------------------

    async def _inbound_invite(self, tx: ServerTransaction) -> None:
        try:
            await self._set_up_inbound(tx)
        finally:
            self._setting_up -= 1

    async def _set_up_inbound(self, tx: ServerTransaction) -> None:
        request = tx.request
        self.count("invitesReceived")
        if not await self._peer_allowed(tx.peer.host):
            self.count("rejectedPeer")
            tx.reply(403, "Forbidden (peer not allowed)", to_tag=new_tag())
            return
        called = phone_number(request.uri) or _e164_or_none(request.get("To"))
        caller = _e164_or_none(request.get("P-Asserted-Identity")) or _e164_or_none(request.get("From"))
        if called is None:
            self.count("unknownNumber")
            tx.reply(404, "Not Found (not a phone number)", to_tag=new_tag())
            return
        if caller is None:
            tx.reply(403, "Forbidden (the caller has no phone number)", to_tag=new_tag())
            return
        if self._bad_extension(tx, new_tag()):
            return
        # RFC 4028 9: too short an interval is refused before the call is placed (the caller asks again).
        session = answer_request(request, min_se=self.min_se, default=self.session_expires)
        if isinstance(session, TooSmall):
            self._too_small(tx, session, new_tag())
            return
        # Without SDP (a late offer, RFC 3261 13.2.1) our 200 carries the offer and the ACK the answer.
        offer: sdp.AudioOffer | None = None
        if request.body:
            try:
                offer = sdp.parse(request.body)
            except sdp.SdpError as exc:
                tx.reply(400, f"Bad Request (SDP: {exc})", to_tag=new_tag())
                return
            if offer.codec() is None:
                tx.reply(488, "Not Acceptable Here (PCMU or PCMA only)", to_tag=new_tag())
                return
        local_tag = new_tag()
        leg = Leg(
            direction="inbound",
            raw_id="4:" + caller,
            call_id=request.call_id,
            local_tag=local_tag,
            local=parse_name_addr(request.get("To") or ""),
            remote=parse_name_addr(request.get("From") or ""),
            peer=tx.peer,
            rtp=await self._open_rtp(),
            invite_tx=tx,
            remote_target=self._contact(request) or parse_name_addr(request.get("From") or "").uri,
            route_set=request.get_all("Record-Route"),
            allows_update="update" in option_tags(request, "Allow"),
            session_answer=session,
            session_require=supports_timer(request),
        )
        leg.local.params["tag"] = local_tag
        if offer is None:
            leg.late_offer = True
        else:
            leg.rtp.set_remote(offer.host, offer.port, offer.codec() or 0, offer.event_payload, offer.direction)
        headers = {name: value for name, value in request.headers if name.lower().startswith("x-")}
        name = parse_name_addr(request.get("From") or "").display
        try:
            async with self.node.store.transaction() as stx:
                # The trunk carries calls to any resource's numbers: the call is the owner's.
                owner = await self.node.numbers.owner(stx, called)
                resource = self.node.resources.by_immutable_id(owner or "") or self.node.resource
                call = await self.node.calls.place_call(
                    stx,
                    resource,
                    source=parse_identifier(caller, "from"),
                    target=parse_identifier(called, "to"),
                    caller_display_name=name,
                    custom_context={"sipHeaders": headers},
                )
                leg.server_call_id = call.server_call_id
                self.dialogs[leg.key] = leg
                self.by_call.setdefault(call.server_call_id, []).append(leg)
        except CallgridError as exc:
            self._close(leg)
            owned = not (isinstance(exc, NotFound) or exc.code == "PhoneNumberNotOwned")
            status = 404 if not owned else 403
            self.count("unknownNumber" if status == 404 else "refused")
            tx.reply(status, f"{'Not Found' if status == 404 else 'Forbidden'} ({exc.message[:80]})", to_tag=local_tag)
            return
        self.count("callsInbound")
        if not tx.final:
            ringing = response_to(request, 180, to_tag=local_tag)
            ringing.add("Contact", self._our_contact(leg, user=called))
            tx.respond(ringing)

    def _contact(self, message: Request | Response) -> str | None:
        value = message.get("Contact")
        if not value:
            return None
        try:
            return parse_name_addr(value).uri
        except SipParseError:
            return None

    async def _open_rtp(self) -> RtpSession:
        session = await RtpSession.open(
            self.bind_host if self.bind_host else self.host,
            on_audio=lambda frame: None,
            on_key=lambda key: None,
            counters=self.count,
        )
        return session

    def _wire_media(self, leg: Leg) -> None:
        plane, scid, raw_id = self.node.media, leg.server_call_id, leg.raw_id

        def heard(frame: Pcm) -> None:
            plane.feed(scid, raw_id, frame)

        leg.rtp.on_audio = heard
        leg.rtp.on_key = lambda key: self._key(leg, key)
        leg.detach_media = plane.attach(scid, raw_id, leg.rtp.hear)

    def _answer_response(
        self, request: Request, leg: Leg, *, direction: str = "sendrecv", offer: bool = False
    ) -> Response:
        response = response_to(request, 200, to_tag=leg.local_tag)
        response.add("Contact", self._our_contact(leg))
        response.add("Allow", ALLOW)
        if self.session_expires:
            response.add("Supported", TIMER)
        response.add("Content-Type", "application/sdp")
        response.add("Server", USER_AGENT)
        for route in request.get_all("Record-Route"):
            response.add("Record-Route", route)
        if offer:
            response.body = sdp.build_offer(self.host, leg.rtp.local_port, origin=leg.origin)
        else:
            response.body = sdp.build(
                self.host,
                leg.rtp.local_port,
                leg.rtp.codec,
                leg.rtp.event_payload,
                origin=leg.origin,
                direction=direction,
            )
        leg.local_sdp = response.body
        return response

    def _answer_inbound(self, leg: Leg) -> None:
        tx = leg.invite_tx
        if tx is None or tx.final:
            return
        leg.answer = self._answer_response(tx.request, leg, offer=leg.late_offer)
        if leg.session_answer is not None:
            self._add_session_headers(leg.answer, leg.session_answer, require=leg.session_require)
        # The caller's connection gone, and no new one to its Via's address: it cannot hear the answer.
        tx.on_failure = lambda: self._answer_undeliverable(leg)
        tx.respond(leg.answer)
        leg.state = "answered"
        if leg.session_answer is not None:
            self._session_begin(leg, leg.session_answer, we_sent=False)
        self._wire_media(leg)
        self._retransmit_answer(leg, T1, 0.0)

    def _answer_undeliverable(self, leg: Leg) -> None:
        if leg.state in ("ringing", "answered"):
            self.count("answerUndeliverable")
            self._far_end_left(leg)

    def _retransmit_answer(self, leg: Leg, interval: float, waited: float) -> None:
        """RFC 3261 13.3.1.4: the 2xx goes again until its ACK; none within 64*T1 ends the call. Over TCP
        it is sent once, but the ACK is waited for as long (a caller whose connection dropped before its
        ACK must not leave the call up)."""

        def fire() -> None:
            if leg.state != "answered" or leg.answer is None or leg.invite_tx is None:
                return
            if waited + interval >= 64 * T1:
                self.count("ackTimeout")
                self._hang_up(leg, 0)
                self._far_end_left(leg)
                return
            self.transport.send(leg.answer, leg.invite_tx.peer)
            self._retransmit_answer(leg, min(interval * 2, T2), waited + interval)

        def timeout() -> None:
            if leg.state == "answered":
                self.count("ackTimeout")
                self._hang_up(leg, 0)
                self._far_end_left(leg)

        if leg.peer.transport == "UDP":
            asyncio.get_running_loop().call_later(interval, fire)
        else:
            asyncio.get_running_loop().call_later(64 * self.layer.t1, timeout)

    # ---- following the call core --------------------------------------------------------------------

    def call_changed(self, call: Call) -> None:
        legs = self.by_call.get(call.server_call_id)
        if not legs:
            return
        # A snapshot older than one already followed would undo it (a CANCEL or BYE for a leg that has just
        # answered): two transactions' actions on one call may run in the other order than they committed.
        if call.revision < self._revisions.get(call.server_call_id, 0):
            self.count("staleCallSnapshotsIgnored")
            return
        self._revisions[call.server_call_id] = call.revision
        for leg in list(legs):
            self._follow(leg, call)

    def _follow(self, leg: Leg, call: Call) -> None:
        if leg.state == "ended":
            return
        in_call = call.state == CallState.CONNECTED and call.participant(leg.raw_id) is not None
        if leg.direction == "inbound":
            if leg.state == "ringing":
                if in_call:
                    self._answer_inbound(leg)
                elif call.state == CallState.DISCONNECTED:
                    code = int((call.end_reason or {}).get("code") or 480)
                    self._hang_up(leg, _REFUSAL.get(code, 480))
            elif not in_call:
                self._hang_up(leg, 0)
            return
        offer = call.offer(leg.offer_id)
        if offer is None:
            # A snapshot from before this leg's offer was made (offers are never removed): it ran its
            # after-commit actions after the ringing transaction's, so it says nothing about this leg.
            self.count("staleCallSnapshotsIgnored")
            return
        if leg.state == "ringing":
            if call.state == CallState.DISCONNECTED or offer.state != OfferState.RINGING:
                self._hang_up(leg, 0)
        elif offer.state == OfferState.RINGING:
            # The far end answered after this snapshot was read: `_answered` is telling the call core (and
            # hangs up itself if the offer stopped ringing meanwhile). Not in the call yet is not "left it".
            self.count("staleCallSnapshotsIgnored")
        elif not in_call:
            self._hang_up(leg, 0)

    def _hang_up(self, leg: Leg, status: int) -> None:
        """End a leg from our side: a final refusal (inbound, still ringing), CANCEL (outbound, still
        ringing) or BYE (connected)."""
        if leg.state == "ended":
            return
        if leg.state == "ringing":
            if leg.direction == "inbound":
                if leg.invite_tx is not None and not leg.invite_tx.final:
                    leg.invite_tx.reply(status or 480, to_tag=leg.local_tag)
            else:
                leg.cancel_wanted = True
                if leg.provisional:
                    self._send_cancel(leg)
                    self._close(leg)
                return  # without a 1xx, the CANCEL goes when one comes (RFC 3261 9.1)
        else:
            self._send_bye(leg)
        self._close(leg)

    def _close(self, leg: Leg) -> None:
        # A closed leg's packets join the totals; a live leg's are added when /metrics is read.
        self.counters["rtpPacketsReceived"] += leg.rtp.received
        self.counters["rtpPacketsSent"] += leg.rtp.sent
        leg.rtp.received = leg.rtp.sent = 0
        leg.state = "ended"
        self.session_timers.cancel(leg.key)
        leg.rtp.close()
        if leg.detach_media is not None:
            leg.detach_media()
            leg.detach_media = None
        self.dialogs.pop(leg.key, None)
        legs = self.by_call.get(leg.server_call_id)
        if legs is not None:
            with contextlib.suppress(ValueError):
                legs.remove(leg)
            if not legs:
                del self.by_call[leg.server_call_id]
                self._revisions.pop(leg.server_call_id, None)

    def _far_end_left(self, leg: Leg) -> None:
        """The far end hung up (BYE, CANCEL, no ACK): the call core hears it; the leg is closed."""
        scid, raw_id = leg.server_call_id, leg.raw_id
        self._close(leg)

        async def apply() -> None:
            async with self.node.store.transaction() as tx:
                await self.node.calls.far_end_hung_up(tx, scid, raw_id)

        if scid:
            self._spawn(apply())

    def _key(self, leg: Leg, key: str) -> None:
        tone = _TONE_OF_KEY.get(key)
        if tone is None or leg.state == "ended":
            return
        self.count("dtmfReceived")

        async def apply() -> None:
            async with leg.keys:  # in the order pressed
                try:
                    async with self.node.store.transaction() as tx:
                        await self.node.calls.media.caller_tones(tx, leg.server_call_id, leg.raw_id, [tone])
                except CallgridError:
                    self.count("dtmfIgnored")

        self._spawn(apply())

    # ---- session timers (RFC 4028) -----------------------------------------------------------------

    def _too_small(self, tx: ServerTransaction, too_small: TooSmall, to_tag: str) -> None:
        self.count("sessionIntervalTooSmall")
        response = response_to(tx.request, 422, to_tag=to_tag)
        response.add("Min-SE", str(too_small.min_se))
        tx.respond(response)

    def _add_session_headers(self, response: Response, session: Session, *, require: bool) -> None:
        response.set("Session-Expires", f"{session.interval};refresher={session.refresher}")
        if require:
            response.add("Require", TIMER)

    def _refreshed_by_peer(self, leg: Leg, request: Request, response: Response, session: Session | None) -> None:
        """A re-INVITE or UPDATE from the far end, answered 2xx (`response`, about to go): the session timer
        starts again as our answer says (RFC 4028 9). Any successful one counts as a refresh: one without
        Session-Expires in a dialog that has a timer keeps it (RFC 4028 would end it; a peer that forgot
        the header in a refresh must not lose the call's protection)."""
        if session is None:
            if not leg.session_interval:
                return
            session = Session(leg.session_interval, UAS if leg.we_refresh else UAC)
        else:
            self._add_session_headers(response, session, require=supports_timer(request))
        if leg.session_interval:
            self.count("sessionRefreshReceived")
        self._session_begin(leg, session, we_sent=False)

    def _session_begin(self, leg: Leg, session: Session, *, we_sent: bool) -> None:
        """The session timer (re)starts with a 2xx: `we_sent` the request it answers (the refresher's role
        is named after that transaction's client and server, RFC 4028 7.2 and 9)."""
        if not leg.session_interval:
            self.count("sessionTimers")
        leg.session_interval = session.interval
        leg.we_refresh = (session.refresher == UAC) == we_sent
        leg.refreshing = False
        now = self.node.clock.now()
        leg.session_expires_at = now + session.interval
        # The refresher at the half interval (RFC 4028 10's recommendation); the other side gives up later.
        give_up = _give_up(leg)
        self.session_timers.set(leg.key, now + session.interval / 2 if leg.we_refresh else give_up)

    def _session_due(self, key: tuple[str, str]) -> None:
        leg = self.dialogs.get(key)
        if leg is None or leg.state == "ended" or not leg.session_interval:
            return
        give_up = _give_up(leg)
        if leg.we_refresh and not leg.refreshing and self.node.clock.now() < give_up:
            self._send_refresh(leg)
            self.session_timers.set(key, give_up)  # if the refresh is still unanswered then, give up
            return
        self.count("sessionExpired")
        self._session_ended(leg)

    def _session_ended(self, leg: Leg) -> None:
        """No refresh came in time, or ours failed: BYE, and the call core hears it as a far end's BYE."""
        self._send_bye(leg)
        self._far_end_left(leg)

    def _our_contact(self, leg: Leg, user: str = "callgrid") -> str:
        """Where the far end sends its requests in this dialog (RFC 3261 12.1.1), over the transport the
        dialog began on: a caller over TCP must not send its BYE or re-INVITE over UDP."""
        transport_param = ";transport=tcp" if leg.peer.transport == "TCP" else ""
        return f"<sip:{user}@{self.host}:{self.port}{transport_param}>"

    def _send_refresh(self, leg: Leg) -> None:
        """Our refresh (RFC 4028 7.4): an UPDATE without SDP if the far end allows UPDATE, else a re-INVITE
        with our SDP as it was (the same version: nothing changes, RFC 3264 8)."""
        leg.refreshing = True
        self.count("sessionRefreshSent")
        method = "UPDATE" if leg.allows_update else "INVITE"
        request = self._in_dialog_request(leg, method)
        request.add("Contact", self._our_contact(leg))
        request.add("Supported", TIMER)
        request.add("Session-Expires", f"{leg.session_interval};refresher={UAC}")
        request.add("Min-SE", str(self.min_se))
        if method == "INVITE":
            request.add("Allow", ALLOW)
            request.add("Content-Type", "application/sdp")
            request.body = leg.local_sdp
        self.layer.request(
            request,
            leg.peer,
            lambda response: self._refresh_response(leg, request, response),
            lambda: self._refresh_failed(leg, "no answer"),
            on_transport_error=lambda: self._refresh_failed(leg, "undeliverable"),
            reconnect=leg.reconnect,
        )

    def _refresh_response(self, leg: Leg, request: Request, response: Response) -> None:
        status = response.status
        if status < 200:
            return
        if request.method == "INVITE" and status < 300:
            self._send_ack(leg, response.cseq[0])  # a 2xx's ACK is ours to send, whatever became of the leg
            if leg.state != "ended":
                self._apply_answer(leg, response)
        if leg.state == "ended" or not leg.refreshing:
            return
        leg.refreshing = False
        if status < 300:
            self.count("sessionRefreshed")
            session = answer_of_response(response, min_se=self.min_se)
            if session is None:
                # RFC 4028 7.2: a 2xx without Session-Expires turns the session timer off.
                leg.session_interval = 0
                self.session_timers.cancel(leg.key)
                return
            self._session_begin(leg, session, we_sent=True)
            return
        if status in (408, 481):
            leg.refreshing = True
            self._refresh_failed(leg, f"sip {status}")
            return
        now = self.node.clock.now()
        give_up = _give_up(leg)
        if status == 422:
            # RFC 4028 7.4: ask again at once with the longer interval the far end's Min-SE asks for.
            try:
                wanted = parse_min_se(response.get("Min-SE") or "")
            except SipParseError:
                wanted = 0
            if wanted > leg.session_interval:
                leg.session_interval = wanted
                self.session_timers.set(leg.key, now)
                return
        # Another refusal (491 glare, 500...): the session lasts until it expires; try again halfway there.
        self.count("sessionRefreshRefused")
        left = give_up - now
        self.session_timers.set(leg.key, now + left / 2 if left > 2 else give_up)

    def _refresh_failed(self, leg: Leg, why: str) -> None:
        """Our refresh timed out, could not be sent, or got 408 / 481 (RFC 4028 10): the far end is gone."""
        if leg.state == "ended" or not leg.refreshing:
            return
        log.info("SIP session refresh failed (%s): ending call leg %s", why, leg.call_id)
        self.count("sessionRefreshFailed")
        self._session_ended(leg)

    # ---- requests we send in a dialog ---------------------------------------------------------------

    def _in_dialog_request(self, leg: Leg, method: str, cseq: int | None = None) -> Request:
        if cseq is None:
            leg.local_cseq += 1
            cseq = leg.local_cseq
        request = Request(method=method, uri=leg.remote_target or leg.remote.uri)
        request.add("Via", f"SIP/2.0/{leg.peer.transport} {self.host}:{self.port};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", str(leg.local))
        request.add("To", str(leg.remote))
        request.add("Call-ID", leg.call_id)
        request.add("CSeq", f"{cseq} {method}")
        routes = list(reversed(leg.route_set)) if leg.direction == "outbound" else list(leg.route_set)
        for route in routes:
            request.add("Route", route)
        request.add("User-Agent", USER_AGENT)
        return request

    def _send_bye(self, leg: Leg) -> None:
        self.count("byeSent")
        if leg.direction == "inbound" and leg.local_cseq == 0:
            leg.local_cseq = 1
        bye = self._in_dialog_request(leg, "BYE")
        self.layer.request(
            bye,
            leg.peer,
            lambda response: None,
            lambda: self.count("byeTimeout"),
            on_transport_error=lambda: self.count("byeUndeliverable"),
            reconnect=leg.reconnect,
        )

    def _send_ack(self, leg: Leg, cseq: int) -> None:
        ack = self._in_dialog_request(leg, "ACK", cseq=cseq)
        self.transport.send(ack, leg.peer, reconnect=leg.reconnect)

    def _send_cancel(self, leg: Leg) -> None:
        if leg.invite is None:
            return
        self.count("cancelSent")
        cancel = Request(method="CANCEL", uri=leg.invite.uri)
        cancel.add("Via", leg.invite.get_all("Via")[0])
        for name in ("Max-Forwards", "From", "To", "Call-ID", "Route"):
            value = leg.invite.get(name)
            if value is not None:
                cancel.add(name, value)
        cancel.add("CSeq", f"{leg.invite.cseq[0]} CANCEL")
        self.layer.request(cancel, leg.peer, lambda response: None, lambda: None, reconnect=leg.reconnect)

    # ---- outbound calls -----------------------------------------------------------------------------

    def ring(self, leg: TrunkLeg) -> None:
        self._spawn(self._outbound(leg, 0))

    async def _outbound(self, plan: TrunkLeg, attempt: int) -> None:
        """INVITE the call's target over the plan's `attempt`-th trunk (0: the route's first choice)."""
        fqdn, port = (plan.trunk_fqdn, plan.trunk_port) if attempt == 0 else plan.failover[attempt - 1]
        addresses = await self._resolve(fqdn)
        if not addresses:
            self.count("trunkUnresolved")
            await self._trunk_failed(plan, attempt, "unresolved", UNREACHABLE)
            return
        peer = Peer(self.outbound, addresses[0], port)
        if peer.transport == "TCP" and not await self.transport.connect(peer.host, peer.port):
            self.count("trunkUnreachable")
            await self._trunk_failed(plan, attempt, "connection refused", UNREACHABLE)
            return
        self.count("callsOutbound")
        local_tag = new_tag()
        caller_user = plan.caller if plan.caller.startswith("+") else "anonymous"
        local = parse_name_addr(f"<sip:{caller_user}@{self.host}:{self.port};user=phone>")
        local.params["tag"] = local_tag
        remote = parse_name_addr(f"<sip:{plan.target}@{fqdn}:{port};user=phone>")
        leg = Leg(
            direction="outbound",
            raw_id="4:" + plan.target,
            call_id=f"{secrets.token_hex(12)}@{self.host}",
            local_tag=local_tag,
            local=local,
            remote=remote,
            peer=peer,
            rtp=await self._open_rtp(),
            server_call_id=plan.server_call_id,
            offer_id=plan.offer_id,
            plan=plan,
            attempt=attempt,
        )
        self.dialogs[leg.key] = leg
        self.by_call.setdefault(plan.server_call_id, []).append(leg)
        invite = self._in_dialog_request(leg, "INVITE")
        invite.uri = remote.uri
        invite.add("Contact", self._our_contact(leg))
        invite.add("Allow", ALLOW)
        if caller_user != "anonymous":
            invite.add("P-Asserted-Identity", f"<sip:{caller_user}@{self.host};user=phone>")
        for name, value in (plan.custom_context.get("sipHeaders") or {}).items():
            if isinstance(name, str) and isinstance(value, str) and name.lower().startswith("x-"):
                invite.add(name, value.replace("\r", " ").replace("\n", " "))
        if self.session_expires:
            # RFC 4028 7.1: the far end chooses who refreshes (its 2xx says).
            invite.add("Supported", TIMER)
            invite.add("Session-Expires", str(self.session_expires))
            invite.add("Min-SE", str(self.min_se))
        invite.add("Content-Type", "application/sdp")
        invite.body = leg.local_sdp = sdp.build_offer(self.host, leg.rtp.local_port, origin=leg.origin)
        self._send_invite(leg, invite)
        # The offer may have stopped ringing while the trunk was being resolved. The far end may answer
        # while this read is under way, so what it finds is a snapshot like any other: one older than a
        # snapshot already followed says nothing (it once sent BYE to a far end that had just answered).
        async with self.node.store.transaction() as tx:
            doc = await tx.get_call(plan.server_call_id)
        if doc is not None:
            self.call_changed(Call.from_doc(doc))

    def _send_invite(self, leg: Leg, invite: Request) -> None:
        leg.invite = invite
        leg.invite_client = self.layer.request(
            invite,
            leg.peer,
            lambda response: self._outbound_response(leg, response),
            lambda: self._outbound_timeout(leg),
            on_transport_error=lambda: self._outbound_transport_error(leg),
            reconnect=leg.reconnect,
        )

    def _invite_again(self, leg: Leg, response: Response) -> bool:
        """A 422 to our INVITE: once, the same INVITE (a new transaction) with the interval the far end's
        Min-SE asks for (RFC 4028 7.4). False: the 422 stands as a refusal."""
        if leg.session_retried or leg.invite is None or leg.cancel_wanted or leg.state == "ended":
            return False
        try:
            min_se = parse_min_se(response.get("Min-SE") or "")
        except SipParseError:
            return False
        leg.session_retried = True
        self.count("sessionIntervalRaised")
        leg.local_cseq += 1
        headers: list[tuple[str, str]] = []
        for name, value in leg.invite.headers:
            low = name.lower()
            if low == "via":
                value = f"SIP/2.0/{leg.peer.transport} {self.host}:{self.port};branch={new_branch()};rport"
            elif low == "cseq":
                value = f"{leg.local_cseq} INVITE"
            elif low == "session-expires":
                value = str(max(min_se, self.session_expires))
            elif low == "min-se":
                value = str(max(min_se, self.min_se))
            headers.append((name, value))
        leg.provisional = False
        self._send_invite(leg, Request(method="INVITE", uri=leg.invite.uri, headers=headers, body=leg.invite.body))
        return True

    def _outbound_response(self, leg: Leg, response: Response) -> None:
        status = response.status
        if status < 200:
            leg.provisional = True
            leg.early = leg.early or status > 100
            if leg.cancel_wanted and leg.state == "ringing":
                self._send_cancel(leg)
                self._close(leg)
            return
        if status >= 300:
            if leg.state == "ended" or leg.cancel_wanted:
                self._close(leg)
                return
            if status == 422 and self._invite_again(leg, response):
                return
            self._close(leg)
            self.count(f"outboundRefused{status}")
            result = _FAR_END.get(status, UNREACHABLE)
            if status in FAILOVER_STATUSES and not leg.early:
                self._spawn(self._failover(leg, f"sip {status}", result))
            else:
                self._spawn(self._refused(leg.server_call_id, leg.offer_id, f"sip {status}", result))
            return
        # 2xx: the dialog is up; ACK it (its own transaction-less request), then tell the core.
        leg.remote = parse_name_addr(response.get("To") or str(leg.remote))
        leg.remote_target = self._contact(response) or leg.remote.uri
        leg.route_set = response.get_all("Record-Route")
        self._send_ack(leg, response.cseq[0])
        if leg.state == "ended" or leg.cancel_wanted:
            leg.state = "confirmed"
            self.dialogs[leg.key] = leg
            self._send_bye(leg)
            self._close(leg)
            return
        leg.state = "confirmed"
        leg.allows_update = "update" in option_tags(response, "Allow")
        self._apply_answer(leg, response)
        session = answer_of_response(response, min_se=self.min_se) if self.session_expires else None
        if session is not None:
            self._session_begin(leg, session, we_sent=True)
        self._spawn(self._answered(leg))

    def _apply_answer(self, leg: Leg, response: Response) -> None:
        """The far end's SDP answer to our offer (in a 2xx to our INVITE or re-INVITE): the RTP follows it."""
        try:
            answer = sdp.parse(response.body)
            codec = answer.codec()
            if codec is not None:
                leg.rtp.set_remote(answer.host, answer.port, codec, answer.event_payload, answer.direction)
        except sdp.SdpError:
            self.count("badAnswerSdp")

    async def _answered(self, leg: Leg) -> None:
        async with self.node.store.transaction() as tx:
            ringing = await self.node.calls.far_end_answered(tx, leg.server_call_id, leg.offer_id)
        if not ringing:
            self._hang_up(leg, 0)
            return
        if leg.state != "ended":
            self._wire_media(leg)

    def _outbound_timeout(self, leg: Leg) -> None:
        """Timer B: no final answer (RFC 3261's 408). Failover, unless the far end was already ringing."""
        if leg.state == "ended":
            return
        self._close(leg)
        self.count("outboundTimeout")
        if leg.early:
            self._spawn(self._refused(leg.server_call_id, leg.offer_id, "no answer from trunk", UNREACHABLE))
        else:
            self._spawn(self._failover(leg, "no answer from trunk", UNREACHABLE))

    def _outbound_transport_error(self, leg: Leg) -> None:
        """The INVITE could not be sent, or the trunk's connection closed or reset before its final answer:
        as a 503 (RFC 3261 8.1.3.1), the next trunk gets the call unless this one had rung."""
        if leg.state == "ended":
            return
        self._close(leg)
        self.count("outboundTransportError")
        if leg.early:
            self._spawn(self._refused(leg.server_call_id, leg.offer_id, "trunk connection lost", UNREACHABLE))
        else:
            self._spawn(self._failover(leg, "trunk connection lost", UNREACHABLE))

    async def _failover(self, leg: Leg, reason: str, result: Result) -> None:
        if leg.plan is None or leg.cancel_wanted:
            await self._refused(leg.server_call_id, leg.offer_id, reason, result)
            return
        await self._trunk_failed(leg.plan, leg.attempt, reason, result)

    async def _trunk_failed(self, plan: TrunkLeg, attempt: int, reason: str, result: Result) -> None:
        """A trunk could not take the call: the next of the plan's trunks gets it, while the offer still
        rings; after the last, the call core hears the refusal."""
        if attempt < len(plan.failover):
            async with self.node.store.transaction() as tx:
                doc = await tx.get_call(plan.server_call_id)
            offer = Call.from_doc(doc).offer(plan.offer_id) if doc is not None else None
            if offer is not None and offer.state == OfferState.RINGING:
                self.count("trunkFailover")
                await self._outbound(plan, attempt + 1)
                return
        await self._refused(plan.server_call_id, plan.offer_id, reason, result)

    async def _refused(self, server_call_id: str, offer_id: str, reason: str, result: Result) -> None:
        async with self.node.store.transaction() as tx:
            await self.node.calls.far_end_refused(tx, server_call_id, offer_id, reason, result)

    # ---- what /metrics shows ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.counters)
        for name, live in (("rtpPacketsReceived", "received"), ("rtpPacketsSent", "sent")):
            out[name] = out.get(name, 0) + sum(getattr(leg.rtp, live) for leg in self.dialogs.values())
        out["activeLegs"] = len(self.dialogs)
        out["activeSettingUp"] = self._setting_up
        out["activeSessionTimers"] = len(self.session_timers)
        return out


def _give_up(leg: Leg) -> float:
    """When the side that does not refresh ends the session (RFC 4028 10), on the node's clock."""
    return leg.session_expires_at - expiry_margin(leg.session_interval)


__all__ = ["Leg", "SipTrunk"]
