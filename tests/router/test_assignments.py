"""Assignments through the CLI and the HTTP API: validation, CSV import errors, 1,000 numbers split by filter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from callgrid.router.models import Assignment
from callgrid.router.store import RouterStore
from callgrid.router.subscribe import MAX_VALUES, NUMBER_KEY
from callgrid.testing import CallgridServer
from tests.router.support import RouterServer

USER = "8:acs:c5645fa7-356a-44e4-9736-4f3cf19827e1_872a0848-85a6-4a65-8918-7fb948432228"
OTHER_USER = "8:acs:c5645fa7-356a-44e4-9736-4f3cf19827e1_00000014-2033-438d-1000-343a0d006e10"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callgrid", "router", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_assign_validates_and_stores_nothing_on_error(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    bad_number = _cli("assign", "4255551212", USER, "--db", db)
    assert bad_number.returncode == 1
    assert "'4255551212' is not an E.164 phone number" in bad_number.stderr
    bad_identity = _cli("assign", "+14255551212", "alice@example.com", "--db", db)
    assert bad_identity.returncode == 1 and "not a Communication Services identity" in bad_identity.stderr
    assert RouterStore(db).count_assignments() == 0

    ok = _cli("assign", "+1 (425) 555-1212", USER, "--display-name", "Ada", "--db", db)
    assert ok.returncode == 0, ok.stderr
    assert RouterStore(db).assignment("+14255551212") == Assignment("+14255551212", USER, "Ada")
    listed = _cli("list", "--json", "--db", db)
    assert '"phoneNumber": "+14255551212"' in listed.stdout
    assert _cli("unassign", "+14255551212", "--db", db).returncode == 0
    missing = _cli("unassign", "+14255551212", "--db", db)
    assert missing.returncode == 1 and "is not assigned" in missing.stderr


CSV = f"""phoneNumber,identity,displayName
+14255550001,{USER},Ada
+14255550002,{OTHER_USER},
4255550003,{USER},no plus
+14255550004,8:orgid:teams-user,teams is not ACS
+14255550001,{OTHER_USER},duplicate
+14255550005
"""


def test_csv_import_reports_every_bad_row_all_or_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    (tmp_path / "a.csv").write_text(CSV)
    strict = _cli("import", str(tmp_path / "a.csv"), "--db", db)
    assert strict.returncode == 1
    for line in (4, 5, 6, 7):
        assert f"a.csv:{line}" in strict.stderr
    assert "nothing was imported" in strict.stderr
    assert RouterStore(db).count_assignments() == 0

    lenient = _cli("import", str(tmp_path / "a.csv"), "--skip-bad", "--db", db)
    assert lenient.returncode == 2
    assert "imported 2 of 6 row(s): 2 new" in lenient.stdout
    assert RouterStore(db).assigned_numbers() == ["+14255550001", "+14255550002"]


def test_http_api(router: RouterServer) -> None:
    assert router.api("GET", "/api/assignments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    created = router.api("PUT", "/api/assignments/+14255551212", json={"identity": USER, "displayName": "Ada"})
    assert created.status_code == 201
    assert router.api("PUT", "/api/assignments/+14255551212", json={"identity": OTHER_USER}).status_code == 200
    bad = router.api("PUT", "/api/assignments/123", json={"identity": USER})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidValue"
    assert router.api("PUT", "/api/assignments/+14255551213", json={"identity": 5}).status_code == 400
    assert router.api("GET", "/api/assignments/+14255551212").json()["identity"] == OTHER_USER

    rejected = router.api("POST", "/api/assignments:import", data=CSV.encode(), headers={"Content-Type": "text/csv"})
    assert rejected.status_code == 400
    assert [e["line"] for e in rejected.json()["error"]["report"]["errors"]] == [4, 5, 6, 7]
    skipped = router.api("POST", "/api/assignments:import?mode=skip-bad", data=CSV.encode())
    assert skipped.json()["created"] == 2 and skipped.json()["applied"] is True
    page = router.api("GET", "/api/assignments?limit=2").json()
    assert page["count"] == 3 and page["nextAfter"] == "+14255550002"

    rules = router.api("PUT", "/api/rules", json={"unassigned": "fallback"})
    assert rules.status_code == 400
    rules = router.api("PUT", "/api/rules", json={"unassigned": "fallback", "fallback": "+18005550100"})
    assert rules.json() == {"unassigned": "fallback", "fallback": "4:+18005550100"}
    assert router.api("PUT", "/api/blocked/+12065550666", json={"note": "spam"}).status_code == 201
    assert router.api("GET", "/api/blocked").json()["value"] == [{"caller": "+12065550666", "note": "spam"}]
    assert router.api("DELETE", "/api/assignments/+14255551212").status_code == 204
    assert router.api("DELETE", "/api/assignments/+14255551212").status_code == 404


def test_a_thousand_numbers_split_across_forty_subscriptions(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    user = new_user()
    numbers = [f"+1425555{i:04d}" for i in range(1000)]
    router.store.import_assignments([Assignment(n, user) for n in numbers])
    plan = router.subscribe()
    assert len(plan.put) == 40 and not plan.delete

    subscriber = router.subscriber()
    subs = {
        s.name: s
        for s in subscriber.client.event_subscriptions.list_by_resource(
            "callgrid-rg", "Microsoft.Communication", "communicationServices", "callgrid"
        )
    }
    assert len(subs) == 40
    covered: list[str] = []
    for sub in subs.values():
        assert sub.provisioning_state == "Succeeded"
        (flt,) = sub.filter.advanced_filters
        assert (flt.operator_type, flt.key) == ("StringIn", NUMBER_KEY)
        assert len(flt.values) <= MAX_VALUES
        covered += flt.values
    assert sorted(covered) == numbers

    # Unassign 30 and add 5: only the touched subscriptions are written, none is moved.
    for n in numbers[100:130]:
        router.store.unassign(n)
    router.store.import_assignments([Assignment(f"+1206555{i:04d}", user) for i in range(5)])
    second = router.subscribe()
    assert sorted(second.put) == ["router-005", "router-006"]
    assert len(second.unchanged) == 38 and not second.delete
    assert router.subscribe().put == {}

    # A call to the last number reaches the router through its subscription.
    fresh.client().own_number(numbers[-1])
    call = fresh.client().place_call("+12065550100", numbers[-1])["serverCallId"]
    assert router.decision(call).outcome == f"redirected to {user}"

    # Everything unassigned: every subscription is deleted.
    for n in router.store.assigned_numbers():
        router.store.unassign(n)
    assert len(router.subscribe().delete) == 40
