"""A call as callgrid keeps it: one JSON document per call, read and written in one transaction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class CallState(StrEnum):
    RINGING = "ringing"  # no one has answered yet; one or more offers ring
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


@dataclass
class CallConnection:
    """An application's leg of a call (what callConnectionId names)."""

    call_connection_id: str
    callback_uri: str
    answered_for: str  # raw id the app answered as
    state: str  # "connecting" | "connected" | "disconnected"
    created_at: float
    operation_context: str | None = None


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

    def offer(self, offer_id: str) -> RingOffer | None:
        return next((o for o in self.offers if o.offer_id == offer_id), None)

    def connection(self, call_connection_id: str) -> CallConnection | None:
        return next((c for c in self.connections if c.call_connection_id == call_connection_id), None)

    def ringing_offers(self) -> list[RingOffer]:
        return [o for o in self.offers if o.state == OfferState.RINGING]

    def active_connections(self) -> list[CallConnection]:
        return [c for c in self.connections if c.state != "disconnected"]

    def record(self, time: float, event: str, **detail: Any) -> None:
        self.timeline.append(TimelineEntry(time, event, detail))

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

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
