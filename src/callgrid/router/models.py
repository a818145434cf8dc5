"""The router's own records: assignments, routing rules, and the decision log."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Assignment:
    phone_number: str
    identity: str
    display_name: str | None = None

    def view(self) -> dict[str, Any]:
        return {"phoneNumber": self.phone_number, "identity": self.identity, "displayName": self.display_name}


class Unassigned(StrEnum):
    """What happens to a call for a number nobody is assigned to."""

    REJECT_BUSY = "reject-busy"
    REJECT_FORBIDDEN = "reject-forbidden"
    FALLBACK = "fallback"  # redirect to the fallback target
    IGNORE = "ignore"  # leave it ringing: another application may handle it


@dataclass(frozen=True)
class Rules:
    unassigned: Unassigned = Unassigned.REJECT_FORBIDDEN
    # An identity's raw id or "4:+E164"; used for unassigned numbers (when chosen) and when a redirect fails.
    fallback: str | None = None

    def view(self) -> dict[str, Any]:
        return {"unassigned": self.unassigned.value, "fallback": self.fallback}


@dataclass(frozen=True)
class IncomingCall:
    """The parts of an IncomingCall event the router keeps until it has acted on it."""

    event_id: str
    caller: str  # raw id
    callee: str  # raw id
    incoming_call_context: str
    server_call_id: str = ""
    correlation_id: str = ""
    event_time: str = ""

    @property
    def callee_number(self) -> str | None:
        return self.callee[2:] if self.callee.startswith("4:") else None

    @property
    def caller_number(self) -> str | None:
        return self.caller[2:] if self.caller.startswith("4:") else None


@dataclass
class ActionRecord:
    action: str  # redirect | reject
    target: str | None
    reason: str | None
    ok: bool
    status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    elapsed_ms: float = 0.0
    at: float = 0.0

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        return {
            "action": out["action"],
            "target": out["target"],
            "reason": out["reason"],
            "ok": out["ok"],
            "status": out["status"],
            "errorCode": out["error_code"],
            "errorMessage": out["error_message"],
            "elapsedMs": round(out["elapsed_ms"], 3),
            "at": out["at"],
        }


@dataclass
class DecisionRecord:
    event_id: str
    received_at: float
    caller: str
    callee: str
    server_call_id: str
    correlation_id: str
    state: str  # pending | done
    rule: str | None
    outcome: str | None
    deliveries: int
    finished_at: float | None
    actions: list[ActionRecord] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "receivedAt": self.received_at,
            "from": self.caller,
            "to": self.callee,
            "serverCallId": self.server_call_id,
            "correlationId": self.correlation_id,
            "state": self.state,
            "rule": self.rule,
            "outcome": self.outcome,
            "deliveries": self.deliveries,
            "finishedAt": self.finished_at,
            "actions": [a.view() for a in self.actions],
        }
