"""The router end to end: a real callgrid process, the router's ASGI app on a real port, the official SDKs.

Each test places a call the way a PSTN caller would and reads the outcome from both sides: the router's
decision log and callgrid's view of the call.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import requests

from callgrid.router.engine import _REPEATABILITY, repeatability_id
from callgrid.router.models import Assignment, Rules, Unassigned
from callgrid.router.subscribe import Scope
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.router.support import RouterServer, wait_for
from tests.support.arm import put_subscription

OWNED = "+14255551212"
OTHER = "+14255550199"
CALLER = "+12065550100"


def _call(fresh: CallgridServer, to: str, caller: str = CALLER) -> str:
    return str(fresh.client().place_call(caller, to)["serverCallId"])


def _events(fresh: CallgridServer, server_call_id: str) -> list[str]:
    return [t["event"] for t in fresh.client().get_call(server_call_id)["timeline"]]


def test_assigned_number_is_redirected_to_its_identity(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    user = new_user()
    fresh.client().own_number(OWNED)
    fresh.client().set_endpoint(user, "answer")
    router.store.assign(Assignment(OWNED, user, "Ada"))
    plan = router.subscribe()
    assert list(plan.put) == ["router-001"]

    call = _call(fresh, OWNED)
    decision = router.decision(call)
    assert (decision.rule, decision.callee, decision.caller) == ("assigned", "4:" + OWNED, "4:" + CALLER)
    assert decision.outcome == f"redirected to {user}"
    assert [(a.action, a.target, a.ok) for a in decision.actions] == [("redirect", user, True)]
    view = wait_for(lambda: (c := fresh.client().get_call(call))["state"] == "connected" and c)
    assert [p["rawId"] for p in view["participants"]] == ["4:" + CALLER, user]
    assert [e for e in _events(fresh, call) if e in ("redirected", "answered")] == ["redirected", "answered"]


def test_unassigned_number_is_rejected_by_rule(fresh: CallgridServer, router: RouterServer) -> None:
    fresh.client().own_number(OTHER)
    router.store.set_rules(Rules(unassigned=Unassigned.REJECT_BUSY))
    router.subscribe(Scope.NUMBERS)

    call = _call(fresh, OTHER)
    decision = router.decision(call)
    assert (decision.rule, decision.outcome) == ("unassigned", "rejected (busy)")
    assert [(a.action, a.reason, a.ok) for a in decision.actions] == [("reject", "busy", True)]
    rejected = wait_for(lambda: [t for t in fresh.client().get_call(call)["timeline"] if t["event"] == "rejected"])
    assert rejected[0]["reason"] == "busy"


def test_unassigned_number_goes_to_the_fallback_identity(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    desk = new_user()
    fresh.client().own_number(OTHER)
    router.store.set_rules(Rules(unassigned=Unassigned.FALLBACK, fallback=desk))
    router.subscribe(Scope.NUMBERS)

    decision = router.decision(_call(fresh, OTHER))
    assert (decision.rule, decision.outcome) == ("unassigned-fallback", f"redirected to fallback {desk}")


def test_blocked_caller_is_rejected_forbidden(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, new_user()))
    router.store.block("+12065550666")
    router.subscribe()

    call = _call(fresh, OWNED, caller="+12065550666")
    decision = router.decision(call)
    assert (decision.rule, decision.outcome) == ("blocked", "rejected (forbidden)")
    assert wait_for(lambda: "rejected" in _events(fresh, call))


def test_failed_redirect_is_logged_with_the_acs_code_and_falls_back(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    desk = new_user()
    missing = f"8:acs:{fresh.env['CALLGRID_IMMUTABLE_RESOURCE_ID']}_00000000-dead-4bad-8bad-000000000000"
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, missing))
    router.store.set_rules(Rules(fallback=desk))
    router.subscribe()

    decision = router.decision(_call(fresh, OWNED))
    first, second = decision.actions
    assert (first.action, first.target, first.ok, first.status, first.error_code) == (
        "redirect",
        missing,
        False,
        404,
        "8522",
    )
    assert "does not exist" in (first.error_message or "")
    assert (second.target, second.ok) == (desk, True)
    assert decision.outcome == f"redirected to fallback {desk}"


def test_failed_redirect_without_fallback_rejects_rather_than_leaving_it_ringing(
    fresh: CallgridServer, router: RouterServer
) -> None:
    other_resource = "8:acs:11111111-2222-3333-4444-555555555555_user"
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, other_resource))
    router.subscribe()

    call = _call(fresh, OWNED)
    decision = router.decision(call)
    assert [(a.action, a.ok, a.error_code) for a in decision.actions] == [
        ("redirect", False, "7507"),
        ("reject", True, None),
    ]
    assert decision.outcome == "rejected (busy) as last resort"
    assert wait_for(lambda: "rejected" in _events(fresh, call))


def test_duplicate_deliveries_of_one_event_act_once(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str], webhook: WebhookReceiver
) -> None:
    user = new_user()
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, user))
    router.subscribe()
    # A second subscription to the same webhook: Event Grid delivers the same event (same id) to each.
    put_subscription(fresh, "router-twin", router.webhook_url)
    put_subscription(fresh, "recorder", webhook.url)

    call = _call(fresh, OWNED)
    decision = wait_for(lambda: (d := router.decision(call)).deliveries == 2 and d)
    assert len(decision.actions) == 1
    # The twin subscription (no filter) also brings the identity's own IncomingCall: left ringing.
    leg = router.decision(call, rule="identity-leg")
    assert (leg.callee, leg.actions, leg.outcome) == (user, [], "left ringing")

    # A replay of the genuine delivery, byte for byte: acknowledged, counted, not acted on.
    original = next(r for r in webhook.wait_until(webhook.notifications) if r.body[0]["id"] == decision.event_id)
    replay = requests.post(
        router.webhook_url, data=original.raw, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert replay.status_code == 200 and replay.json()["duplicates"] == 1
    again = router.store.decisions(event_id=decision.event_id)[0]
    assert (again.deliveries, len(again.actions)) == (3, 1)


def test_repeatability_ids_are_uuid5s_of_the_event_and_step() -> None:
    for name in ("0d6c6c3e-8a0e-4b7c-9a3b-0c1e2f3a4b5c/0", "e/1", "", "événement/2"):
        assert repeatability_id(name) == str(uuid.uuid5(_REPEATABILITY, name))
