"""A call as callgrid keeps it: one JSON document per call, read and written in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CallState(StrEnum):
    RINGING = "ringing"  # no one has answered yet; one or more offers ring
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class ConnectionState(StrEnum):
    """callConnectionState as ACS reports it for an app's leg."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class OfferState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    REDIRECTED = "redirected"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELED = "canceled"


class Scenario(StrEnum):
    """Why an offer rings: the seed's four ways an IncomingCall arises."""

    CALL = "call"
    REDIRECT = "redirect"
    ADD_PARTICIPANT = "addParticipant"
    TRANSFER = "transfer"


@dataclass
class Participant:
    raw_id: str
    role: str  # "caller" | "callee"
    joined_at: float
    call_connection_id: str | None = None
    is_muted: bool = False
    is_on_hold: bool = False


@dataclass
class RingOffer:
    """One target ringing: the IncomingCall it raised carries this offer's incomingCallContext."""

    offer_id: str
    target: str  # raw id of who rings (the IncomingCall's `to`)
    source: str  # raw id of who calls (the IncomingCall's `from`)
    scenario: str
    state: str
    created_at: float
    expires_at: float
    incoming_call_event_id: str | None = None
    custom_context: dict[str, Any] = field(default_factory=dict)
    ended_at: float | None = None
    outcome: str | None = None
    # An exclusive offer is one of several places a not-yet-connected call rings: the first
    # answer cancels the others. Invitations (add participant, transfer, group create) are not.
    exclusive: bool = True
    # Mid-call invitations: who asked, for what, and where the outcome is reported.
    requested_by: str | None = None  # callConnectionId
    invitation_id: str | None = None
    operation_context: str | None = None
    operation_callback_uri: str | None = None
    transferee: str | None = None  # raw id of who is transferred (Scenario.TRANSFER)
    # A transfer out of a group call moves the transferee to a new call with the target; in a 1:1
    # call the target takes the app's place instead.
    group_transfer: bool = False
    # The app leg that answered this offer (callConnectionId), once one has.
    answered_by: str | None = None
    # Its ring timeout's timer (offer.expire), deleted when the offer ends otherwise (answered, redirected, ...).
    ring_timer_id: str | None = None


@dataclass
class CallConnection:
    """An application's leg of a call (what callConnectionId names)."""

    call_connection_id: str
    callback_uri: str
    answered_for: str  # raw id the app answered as
    state: str  # ConnectionState
    created_at: float
    operation_context: str | None = None
    # "answered" (answer_call), "created" (create_call) or "connected" (connect_call).
    origin: str = "answered"
    # Who called the leg the app answered (the IncomingCall's `from`); None for the legs the app placed,
    # whose source is the app itself, and for legs saved before this was kept.
    caller: str | None = None


@dataclass
class TimelineEntry:
    time: float
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    server_call_id: str
    correlation_id: str
    state: str
    created_at: float
    source: str
    caller_display_name: str
    custom_context: dict[str, Any] = field(default_factory=dict)
    participants: list[Participant] = field(default_factory=list)
    offers: list[RingOffer] = field(default_factory=list)
    connections: list[CallConnection] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    ended_at: float | None = None
    end_reason: dict[str, Any] | None = None
    connected_at: float | None = None
    # Events raised in one instant get strictly increasing times, so their order survives delivery.
    last_event_time: float = 0.0
    participants_sequence: int = 0
    # How many times the call was saved: orders the committed snapshots of one call (see `save`).
    revision: int = 0
    media: dict[str, Any] = field(default_factory=dict)  # owned by platform/media.py
    # The immutable id of the resource the call belongs to ("" in calls saved before there were several).
    resource_id: str = ""

    def offer(self, offer_id: str) -> RingOffer | None:
        return next((o for o in self.offers if o.offer_id == offer_id), None)

    def connection(self, call_connection_id: str) -> CallConnection | None:
        return next((c for c in self.connections if c.call_connection_id == call_connection_id), None)

    def ringing_offers(self) -> list[RingOffer]:
        return [o for o in self.offers if o.state == OfferState.RINGING]

    def active_connections(self) -> list[CallConnection]:
        return [c for c in self.connections if c.state != ConnectionState.DISCONNECTED]

    def participant(self, raw_id: str) -> Participant | None:
        return next((p for p in self.participants if p.raw_id == raw_id), None)

    def invitation(self, invitation_id: str) -> RingOffer | None:
        return next((o for o in self.offers if o.invitation_id == invitation_id), None)

    def event_time(self, now: float) -> float:
        # 10 µs steps: a float near 1.7e9 resolves about 0.25 µs, and event times print to 1 µs.
        self.last_event_time = max(now, self.last_event_time + 1e-5)
        return self.last_event_time

    def record(self, time: float, event: str, **detail: Any) -> None:
        self.timeline.append(TimelineEntry(time, event, detail))

    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready view (nested dicts are shared with the call, not copied).

        A call is saved on every change: dataclasses.asdict's recursive deep copy was ~7% of the
        server's CPU under load, and the view is only ever serialised.
        """
        doc = dict(self.__dict__)
        doc["participants"] = [dict(p.__dict__) for p in self.participants]
        doc["offers"] = [dict(o.__dict__) for o in self.offers]
        doc["connections"] = [dict(c.__dict__) for c in self.connections]
        doc["timeline"] = [dict(t.__dict__) for t in self.timeline]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Call:
        return cls(
            **{
                **doc,
                "participants": [Participant(**p) for p in doc["participants"]],
                "offers": [RingOffer(**o) for o in doc["offers"]],
                "connections": [CallConnection(**c) for c in doc["connections"]],
                "timeline": [TimelineEntry(**t) for t in doc["timeline"]],
            }
        )
