"""`--json` on the read-outs: plain JSON on stdout with the server's keys, what scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.support.arm import put_subscription

INCOMING_CALL = "Microsoft.Communication.IncomingCall"


def _json(*args: str) -> Any:
    env = {**os.environ, "COLUMNS": "80"}  # a narrow pipe: JSON must not be folded as tables are
    result = subprocess.run(
        [sys.executable, "-m", "callgrid", *args, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout  # no colour codes
    return json.loads(result.stdout)


def test_read_outs_print_the_servers_documents(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    where = ("--data-dir", str(fresh.data_dir))
    put_subscription(fresh, "json-app", webhook.url + "/incoming")
    fresh.own_number("+14255550190")
    call = fresh.place_call("+12065550100", "+14255550190")["serverCallId"]
    webhook.wait_for(INCOMING_CALL, timeout=10)

    subscriptions = _json("subscriptions", "list", *where)
    assert [s["name"] for s in subscriptions] == ["json-app"]
    assert subscriptions[0]["properties"]["provisioningState"] == "Succeeded"
    assert _json("subscriptions", "show", "json-app", *where)["name"] == "json-app"
    numbers = _json("numbers", "list", *where)
    assert [n["phoneNumber"] for n in numbers] == ["+14255550190"]
    deliveries = _json("deliveries", *where)
    incoming = [d for d in deliveries if d["kind"] == "eventgrid"]
    assert len(incoming) == 1 and incoming[0]["status"] == "delivered"
    assert incoming[0]["subscriptionId"].lower().endswith("/eventsubscriptions/json-app")
    assert _json("dead-letters", "list", *where) == []
    assert [c["serverCallId"] for c in _json("calls", "list", *where)] == [call]
    health = _json("health", *where)
    assert health["status"] == "ok" and health["clock"] == "virtual"


def test_router_read_outs(tmp_path: Path) -> None:
    db = str(tmp_path / "router.db")
    blocked = subprocess.run(
        [sys.executable, "-m", "callgrid", "router", "block", "+12065550199", "--note", "spam", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert blocked.returncode == 0, blocked.stderr
    assert _json("router", "blocked", "--db", db) == [{"caller": "+12065550199", "note": "spam"}]
    assert _json("router", "list", "--db", db) == []
    assert _json("router", "log", "--db", db) == []
