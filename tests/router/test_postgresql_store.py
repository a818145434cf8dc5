"""The router on PostgreSQL (`callgrid router serve --store postgresql://...`): two real router processes on one
database behind one webhook URL give the same answers, and the store builds the tables SQLite's does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from callgrid.router.app import webhook_url
from callgrid.router.models import Assignment, Rules, Unassigned
from callgrid.router.store import RouterStore, open_router_store
from callgrid.testing import CallgridServer, free_port
from callgrid.testing.stores import drop_schema, fresh_postgres_url
from tests.router.support import wait_for
from tests.support.arm import put_subscription
from tests.support.schema import postgres_schema, sqlite_schema

OWNED = "+14255551212"
OTHER = "+14255550199"
CALLER = "+12065550100"


@pytest.fixture
def store_url() -> Iterator[str]:
    url, schema = fresh_postgres_url("router")
    yield url
    drop_schema(schema)


def _cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "callgrid", "router", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


class RouterProcess:
    """`callgrid router serve --store URL` in a process of its own."""

    def __init__(self, callgrid: CallgridServer, store: str, log: Path) -> None:
        self.port = free_port()
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callgrid",
                "router",
                "serve",
                "--connection-string",
                callgrid.connection_string,
                "--jwt-audience",
                callgrid.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
                "--port",
                str(self.port),
                "--store",
                store,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        wait_for(self._ready, timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the router exited ({self.process.returncode})")
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def test_two_routers_on_one_database_route_by_the_same_assignments(
    fresh: CallgridServer, new_user: Callable[[], str], store_url: str, tmp_path: Path
) -> None:
    routers = [RouterProcess(fresh, store_url, tmp_path / f"router-{n}.log") for n in range(2)]
    try:
        a, b = routers
        info = dict(line.split("=", 1) for line in _cli("info", "--store", store_url).splitlines())
        secret = parse_qs(urlsplit(info["webhook_url"]).query)["secret"][0]
        auth = {"Authorization": f"Bearer {info['api_key']}"}

        def api(router: RouterProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
            return requests.request(method, router.url + path, headers=auth, timeout=10, **kwargs)

        # An assignment made through router A (its HTTP API) is router B's answer too, and one made with
        # the CLI on the same store is both routers'.
        user = new_user()
        made = api(a, "PUT", f"/api/assignments/{OWNED}", json={"identity": user, "displayName": "Ada"})
        assert made.status_code == 201, made.text
        assert api(b, "GET", f"/api/assignments/{OWNED}").json() == made.json()
        _cli("assign", OTHER, user, "--store", store_url)
        for router in routers:
            assert [x["phoneNumber"] for x in api(router, "GET", "/api/assignments").json()["value"]] == [OTHER, OWNED]

        # Event Grid reaches router B, with the webhook secret both share; B routes by A's assignment.
        fresh.client().own_number(OWNED)
        fresh.client().set_endpoint(user, "answer")
        sub = put_subscription(fresh, "router-b", webhook_url(b.url, secret))
        assert sub["properties"]["provisioningState"] == "Succeeded"
        call = str(fresh.client().place_call(CALLER, OWNED)["serverCallId"])

        # Router A's log shows B's decision (one decision log), and the call reached the assigned user.
        def decided() -> dict[str, Any] | None:
            found = api(a, "GET", "/api/decisions", params={"serverCallId": call}).json()["value"]
            # (the redirect's IncomingCall, to the user, is logged too: left for the user's app)
            done = [d for d in found if d["to"] == "4:" + OWNED and d["state"] == "done"]
            return done[0] if done else None

        decision = wait_for(decided)
        assert (decision["rule"], decision["outcome"]) == ("assigned", f"redirected to {user}")
        view = wait_for(lambda: (c := fresh.client().get_call(call))["state"] == "connected" and c)
        assert [p["rawId"] for p in view["participants"]] == ["4:" + CALLER, user]

        # Deleted through B: gone for A.
        assert api(b, "DELETE", f"/api/assignments/{OWNED}").status_code == 204
        assert api(a, "GET", f"/api/assignments/{OWNED}").status_code == 404
    finally:
        for router in routers:
            router.stop()


def test_the_postgresql_store_builds_the_schema_sqlite_builds(tmp_path: Path, store_url: str) -> None:
    # One source (router/store.py's scripts, translated by store/schema.py): tables, column types and
    # nullability, keys and indexes come out the same; the version is a table on PostgreSQL only.
    sqlite_store = RouterStore(tmp_path / "router.db")
    pg_store = open_router_store(store_url)
    try:
        on_sqlite = sqlite_schema(tmp_path / "router.db")
        on_postgresql = postgres_schema(parse_qs(urlsplit(store_url).query)["schema"][0], skip={"schema_version"})
    finally:
        sqlite_store.close()
        pg_store.close()
    assert sorted(on_postgresql) == sorted(on_sqlite)
    for table in on_sqlite:
        assert on_postgresql[table] == on_sqlite[table], table
    # The decision log's tie-break (rowid) and the action log's own numbering exist on both.
    assert "rowid" in on_postgresql["decisions"]["columns"]  # type: ignore[operator]
    assert on_postgresql["actions"]["key"] == ["id"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_one_lookup_answers_what_routing_asks(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`lookup` (one statement) gives the answers the three separate reads give, on both stores, and sees a
    rules change made by another writer (the CLI) at the next call."""
    location = request.getfixturevalue("store_url") if kind == "postgresql" else str(tmp_path / "router.db")
    store, other = open_router_store(location), open_router_store(location)
    try:
        store.assign(Assignment(OWNED, "8:acs:r_u1", "Front desk"))
        store.block("8:acs:r_pest")
        store.block(CALLER)
        for number, callers in [
            (OWNED, ["4:" + CALLER, CALLER]),
            (OWNED, ["8:acs:r_pest", ""]),
            (OWNED, ["4:+12065550111", "+12065550111"]),
            (OTHER, ["4:+12065550111", "+12065550111"]),
        ]:
            found = store.lookup(number, callers)
            assert found.assignment(number) == store.assignment(number)
            assert found.is_blocked(callers) == store.is_blocked(callers)
            assert found.rules == store.rules() == Rules()
        other.set_rules(Rules(Unassigned.FALLBACK, "8:acs:r_desk"))
        assert store.lookup(OTHER, ["4:" + CALLER, CALLER]).rules == Rules(Unassigned.FALLBACK, "8:acs:r_desk")
        assert store.lookup(None, ["4:" + CALLER, CALLER]).assigned is None
    finally:
        store.close()
        other.close()
