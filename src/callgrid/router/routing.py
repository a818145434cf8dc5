"""The routing rules: which SDK calls an IncomingCall gets, decided from the router's own records.

A plan is a rule name and an ordered list of steps; the router tries them in order until one succeeds,
so a failed redirect falls through to the fallback target and, last, to a busy reject rather than
leaving the caller ringing into nothing. An empty plan leaves the call ringing on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from callgrid.router.models import Assignment, IncomingCall, Rules, Unassigned

ACS_USER_PREFIXES = ("8:acs:", "8:gcch-acs:", "8:dod-acs:", "8:spool:")


@dataclass(frozen=True)
class Step:
    action: str  # "redirect" | "reject"
    target: str | None = None  # raw id ("8:acs:..." or "4:+E164") for redirects
    reason: str | None = None  # "busy" | "forbidden" for rejects
    note: str = ""  # e.g. "fallback"


@dataclass(frozen=True)
class Plan:
    rule: str
    steps: tuple[Step, ...]


class Records(Protocol):
    def assignment(self, phone_number: str) -> Assignment | None: ...

    def is_blocked(self, callers: list[str]) -> bool: ...


LAST_RESORT = Step("reject", reason="busy", note="last resort")


def _with_failover(first: Step, rules: Rules) -> tuple[Step, ...]:
    steps = [first]
    if rules.fallback and rules.fallback != first.target:
        steps.append(Step("redirect", target=rules.fallback, note="fallback"))
    steps.append(LAST_RESORT)
    return tuple(steps)


def blocking_keys(call: IncomingCall) -> list[str]:
    """Who a block-list entry may name for this call: the caller's raw id, and its number if it has one."""
    return [call.caller, call.caller_number or ""]


def decide(call: IncomingCall, records: Records, rules: Rules) -> Plan:
    number = call.callee_number
    if number is None:
        # The second leg: the router (or someone) redirected to an identity, whose device rings now.
        if call.callee.startswith(ACS_USER_PREFIXES):
            return Plan("identity-leg", ())
        return Plan("other-callee", ())
    if records.is_blocked(blocking_keys(call)):
        return Plan("blocked", (Step("reject", reason="forbidden"),))
    assignment = records.assignment(number)
    if assignment is not None:
        return Plan("assigned", _with_failover(Step("redirect", target=assignment.identity), rules))
    match rules.unassigned:
        case Unassigned.IGNORE:
            return Plan("unassigned", ())
        case Unassigned.REJECT_BUSY:
            return Plan("unassigned", (Step("reject", reason="busy"),))
        case Unassigned.FALLBACK if rules.fallback:
            return Plan("unassigned-fallback", (Step("redirect", target=rules.fallback, note="fallback"), LAST_RESORT))
        case _:
            return Plan("unassigned", (Step("reject", reason="forbidden"),))
