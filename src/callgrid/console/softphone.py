"""The browser as a party of a call: WebRTC between the browser's RTCPeerConnection and aiortc here.

The browser's microphone is decoded, resampled to the media plane's 16 kHz mono and spoken into the call
as its party's voice (`MediaPlane.speak`, as a simulated caller's); what that party hears (prompts, bot
audio, the other parties) comes from the plane's ears for it (`MediaPlane.attach`) and is sent back
at 20 ms a frame. Keys pressed on the keypad are the party's DTMF, as the simulator's `sendDtmf`.

Signalling is one POST: the browser's offer with its ICE candidates gathered (aiortc does not trickle),
answered with ours. Everything runs in the server's event loop; a session ends with its call, its
hang-up, or its peer connection failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from callgrid.errors import CallgridError, InvalidRequest, NotFound
from callgrid.media.codecs import Pcm
from callgrid.node import Node
from callgrid.platform.calls import DeviceBehaviour
from callgrid.platform.calls.service import parse_identifier

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack, RTCPeerConnection

    from callgrid.console.webrtc import PlaneTrack

log = logging.getLogger(__name__)

JOIN_POLL_SECONDS = 0.05


@dataclass
class Session:
    id: str
    server_call_id: str  # "" while a registered softphone waits for a call
    raw_id: str
    pc: RTCPeerConnection
    track: PlaneTrack
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    detach: Callable[[], None] | None = None
    closed: bool = False
    state: str = "calling"  # calling | waiting | ringing | inCall | ended
    caller: str | None = None  # who rings a registered softphone

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rawId": self.raw_id,
            "state": "ended" if self.closed else self.state,
            "serverCallId": self.server_call_id or None,
            "from": self.caller,
        }


class Softphones:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._sessions: dict[str, Session] = {}

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"No softphone session '{session_id}' (it ended, or the server restarted).")
        return session

    async def call(self, source: str, target: str, offer_sdp: str) -> tuple[Session, str]:
        """Negotiate with the browser's offer, then place the call as `source`; returns our answer's SDP."""
        caller = parse_identifier(source, "from")
        callee = parse_identifier(target, "to")
        session = await self._negotiate(caller.raw_id, offer_sdp)
        try:
            async with self._node.store.transaction() as tx:
                placed = await self._node.calls.place_call(tx, self._node.resource, source=caller, target=callee)
        except BaseException:
            await session.pc.close()
            raise
        session.server_call_id = placed.server_call_id
        self._sessions[session.id] = session
        self._spawn(session, self._join_when_connected(session))
        return session, session.pc.localDescription.sdp

    async def register(self, raw_id: str, offer_sdp: str) -> tuple[Session, str]:
        """The browser waits to be rung as `raw_id` (an identity of this resource, or a phone number)."""
        who = parse_identifier(raw_id, "as")
        if who.is_communication_user:
            async with self._node.store.transaction() as tx:
                await self._node.identities.require(tx, self._node.resource, who.raw_id)
        elif not who.is_phone_number:
            raise InvalidRequest("'as' must be an identity of this resource or a phone number.")
        if any(s.raw_id == who.raw_id and s.state in ("waiting", "ringing") for s in self._sessions.values()):
            raise InvalidRequest(f"A softphone already waits for {who.raw_id}'s calls.")
        session = await self._negotiate(who.raw_id, offer_sdp)
        session.state = "waiting"
        self._sessions[session.id] = session
        self._spawn(session, self._wait_for_ring(session))
        return session, session.pc.localDescription.sdp

    async def _wait_for_ring(self, session: Session) -> None:
        """Until a call rings the registered party (an offer for it appears), then until it is answered."""
        while not session.closed and session.state == "waiting":
            async with self._node.store.transaction() as tx:
                calls = await self._node.calls.list_calls(tx, 20)
            for call in calls:
                if any(o.target == session.raw_id for o in call.ringing_offers()):
                    session.server_call_id, session.caller, session.state = call.server_call_id, call.source, "ringing"
                    break
            else:
                await asyncio.sleep(JOIN_POLL_SECONDS * 4)

    async def status(self, session: Session) -> dict[str, Any]:
        """The session as the browser shows it; a ring that stopped (the caller gave up, it timed out, it
        was answered elsewhere) puts a registered softphone back to waiting."""
        if session.state == "ringing" and not session.closed:
            async with self._node.store.transaction() as tx:
                doc = await tx.get_call(session.server_call_id)
            offers = [] if doc is None else doc.get("offers", [])
            if not any(o["target"] == session.raw_id and o["state"] == "ringing" for o in offers):
                session.server_call_id, session.caller, session.state = "", None, "waiting"
                self._spawn(session, self._wait_for_ring(session))
        return session.view()

    async def act(self, session: Session, action: DeviceBehaviour) -> None:
        """A registered softphone answers or declines the call that rings it."""
        if session.state != "ringing":
            raise InvalidRequest(f"The softphone is {session.state}, not ringing.")
        async with self._node.store.transaction() as tx:
            await self._node.calls.device_act(tx, session.server_call_id, session.raw_id, action)
        if action is DeviceBehaviour.ANSWER:
            session.state = "calling"
            self._spawn(session, self._join_when_connected(session))
        else:
            session.server_call_id, session.caller, session.state = "", None, "waiting"
            self._spawn(session, self._wait_for_ring(session))

    async def _negotiate(self, raw_id: str, offer_sdp: str) -> Session:
        if not isinstance(offer_sdp, str) or not offer_sdp.startswith("v=0"):
            raise InvalidRequest("'sdp' must be the browser's SDP offer.")
        from callgrid.console import webrtc  # aiortc loads with the first softphone, not with the server

        def on_audio(remote: MediaStreamTrack) -> None:
            self._spawn(session, self._pump_microphone(session, remote))

        async def on_failed() -> None:
            await self.hang_up(session)

        pc, track = webrtc.peer(on_audio, on_failed)
        session = Session(str(uuid.uuid4()), "", raw_id, pc, track)
        await webrtc.answer(pc, offer_sdp)
        return session

    def _spawn(self, session: Session, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _join_when_connected(self, session: Session) -> None:
        """Once the call has connected the party, its ears feed the browser."""
        plane = self._node.media
        while not session.closed and not plane.in_call(session.server_call_id, session.raw_id):
            await asyncio.sleep(JOIN_POLL_SECONDS)
            if await self._call_over(session):
                await self.hang_up(session)
                return
        if session.closed:
            return
        session.state = "inCall"

        def ended() -> None:
            # The call's media ended (everyone hung up): the browser's connection goes too.
            self._spawn(session, self.hang_up(session))

        session.detach = plane.attach(session.server_call_id, session.raw_id, session.track.push, ended)

    async def _call_over(self, session: Session) -> bool:
        async with self._node.store.transaction() as tx:
            doc = await tx.get_call(session.server_call_id)
        return doc is None or doc.get("state") == "disconnected"

    async def _pump_microphone(self, session: Session, remote: MediaStreamTrack) -> None:
        """The browser's voice into the call, once the party is in it (before, it is dropped)."""
        from callgrid.console import webrtc

        plane = self._node.media

        def speak(chunk: Pcm) -> None:
            if plane.in_call(session.server_call_id, session.raw_id):
                plane.speak(session.server_call_id, session.raw_id, chunk)

        await webrtc.microphone(remote, speak, lambda: session.closed)

    async def dtmf(self, session: Session, tones: list[str]) -> None:
        async with self._node.store.transaction() as tx:
            await self._node.calls.media.caller_tones(tx, session.server_call_id, session.raw_id, tones)

    async def hang_up(self, session: Session) -> None:
        """The browser's party leaves the call (or abandons it ringing), and its connection closes."""
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        if session.detach is not None:
            session.detach()
        if session.state == "ringing":
            with contextlib.suppress(CallgridError):
                await self.act(session, DeviceBehaviour.DECLINE)
        elif session.server_call_id:
            with contextlib.suppress(CallgridError):
                async with self._node.store.transaction() as tx:
                    await self._node.calls.hang_up_participant(tx, session.server_call_id, session.raw_id)
        session.track.stop()
        await session.pc.close()
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current:
                task.cancel()

    async def close_all(self) -> None:
        for session in list(self._sessions.values()):
            await self.hang_up(session)
