"""The pure parts: routing decisions and sticky subscription packing."""

from __future__ import annotations

from callgrid.router.models import Assignment, IncomingCall, Rules, Unassigned
from callgrid.router.routing import decide
from callgrid.router.subscribe import Existing, Scope, plan_subscriptions

USER = "8:acs:r_u1"


class Records:
    def __init__(self, assigned: dict[str, str], blocked: set[str]) -> None:
        self.assigned = assigned
        self.blocked = blocked

    def assignment(self, phone_number: str) -> Assignment | None:
        identity = self.assigned.get(phone_number)
        return Assignment(phone_number, identity) if identity else None

    def is_blocked(self, callers: list[str]) -> bool:
        return bool(self.blocked & set(callers))


def _call(to: str, caller: str = "4:+12065550100") -> IncomingCall:
    return IncomingCall("e", caller, to, "ctx")


def test_decisions() -> None:
    records = Records({"+14255551212": USER}, {"+12065550666"})
    plan = decide(_call("4:+14255551212"), records, Rules(fallback="8:acs:r_desk"))
    assert plan.rule == "assigned"
    assert [(s.action, s.target or s.reason) for s in plan.steps] == [
        ("redirect", USER),
        ("redirect", "8:acs:r_desk"),
        ("reject", "busy"),
    ]
    assert decide(_call("4:+14255551212", "4:+12065550666"), records, Rules()).rule == "blocked"
    assert decide(_call(USER), records, Rules()).steps == ()
    assert [s.reason for s in decide(_call("4:+1800"), records, Rules()).steps] == ["forbidden"]
    assert decide(_call("4:+1800"), records, Rules(unassigned=Unassigned.IGNORE)).steps == ()
    # "fallback" without a target falls back to a forbidden reject instead of doing nothing.
    assert decide(_call("4:+1800"), records, Rules(unassigned=Unassigned.FALLBACK)).rule == "unassigned"


def test_packing_is_sticky_and_fills_free_room_first() -> None:
    existing = [
        Existing("r-001", frozenset(f"+1{i:03d}" for i in range(25)), "http://h/x"),
        Existing("r-002", frozenset(f"+1{i:03d}" for i in range(25, 40)), "http://h/x"),
        Existing("r-all", None, "http://h/x"),
        Existing("someone-else", frozenset({"+1999"}), "http://h/x"),
    ]
    wanted = [f"+1{i:03d}" for i in range(40)] + ["+2000", "+2001"]
    plan = plan_subscriptions(existing, wanted, prefix="r", scope=Scope.ASSIGNED, endpoint_base_url="http://h/x")
    assert plan.unchanged == ["r-001"]
    assert plan.put == {"r-002": sorted([f"+1{i:03d}" for i in range(25, 40)] + ["+2000", "+2001"])}
    assert plan.delete == ["r-all"]

    moved = plan_subscriptions(existing, wanted, prefix="r", scope=Scope.ASSIGNED, endpoint_base_url="http://new/x")
    assert sorted(moved.put) == ["r-001", "r-002"]
    catch_all = plan_subscriptions(existing, wanted, prefix="r", scope=Scope.NUMBERS, endpoint_base_url="http://h/x")
    assert catch_all.put == {"r-numbers": None} and sorted(catch_all.delete) == ["r-001", "r-002", "r-all"]
