"""`callgrid device`, `calls list|show`, `identities list`: scripting simulated phones and reading what the
server knows of calls, through the CLI against a real server (virtual clock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from callgrid.testing import CallgridServer


def _run(server: CallgridServer, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(server.data_dir)]
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args, *where], capture_output=True, text=True, env=env, timeout=60
    )


def _json(server: CallgridServer, *args: str) -> Any:
    result = _run(server, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _identity(server: CallgridServer) -> str:
    result = _run(server, "identities", "create")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_slow_device_answers_after_its_delay_on_the_virtual_clock(fresh: CallgridServer) -> None:
    agent = _identity(fresh)
    scripted = _run(fresh, "device", "set", agent, "--answer", "--delay", "2s")
    assert scripted.returncode == 0, scripted.stderr
    assert "answers after 2 s" in scripted.stdout
    assert _json(fresh, "device", "show", agent) == {
        "rawId": agent,
        "onIncomingCall": "answer",
        "answerDelayMs": 2000,
        "connectDelayMs": 0,
    }
    call = fresh.place_call("+12065550100", agent)["serverCallId"]
    assert _json(fresh, "calls", "show", call)["state"] == "ringing"
    advanced = _run(fresh, "clock", "advance", "2s")
    assert advanced.returncode == 0, advanced.stderr
    view = _json(fresh, "calls", "show", call)
    assert view["state"] == "connected"
    assert [p["rawId"] for p in view["participants"]] == ["4:+12065550100", agent]
    assert [t["event"] for t in view["timeline"]][-1] == "answered"
    shown = _run(fresh, "calls", "show", call)
    assert shown.returncode == 0, shown.stderr
    for text in (f"call {call}: connected", "participants", "answered by device", "callPlaced", "ringing"):
        assert text in shown.stdout, shown.stdout


@pytest.mark.parametrize("behaviour", ["decline", "busy", "unreachable"])
def test_a_device_that_refuses_ends_the_offer(fresh: CallgridServer, behaviour: str) -> None:
    fresh.own_number("+14255550170")
    scripted = _run(fresh, "device", "set", "+14255550170", f"--{behaviour}")
    assert scripted.returncode == 0, scripted.stderr
    call = fresh.place_call("+12065550100", "+14255550170")["serverCallId"]
    view = _json(fresh, "calls", "show", call)
    assert view["offers"][0]["outcome"] == f"{behaviour} by device"
    assert view["state"] != "connected"
    listed = _json(fresh, "calls", "list")
    assert [c["serverCallId"] for c in listed] == [call]
    assert listed[0]["offers"][0]["target"] == "4:+14255550170"


def test_device_list_and_identities_list(fresh: CallgridServer) -> None:
    first, second = _identity(fresh), _identity(fresh)
    assert _run(fresh, "device", "set", first, "--busy").returncode == 0
    assert _run(fresh, "device", "set", "4:+14255550171", "--answer", "--connect-delay", "1.5s").returncode == 0
    devices = _json(fresh, "device", "list")
    assert devices == sorted(devices, key=lambda d: d["rawId"])
    assert {d["rawId"]: (d["onIncomingCall"], d["connectDelayMs"]) for d in devices} == {
        first: ("busy", 0),
        "4:+14255550171": ("answer", 1500),
    }
    identities = _json(fresh, "identities", "list")
    assert {i["rawId"] for i in identities} == {first, second}
    by_id = {i["rawId"]: i for i in identities}
    assert by_id[first]["device"]["onIncomingCall"] == "busy" and by_id[second]["device"] is None
    assert set(by_id[first]) == {"rawId", "createdAt", "tokensRevokedAt", "device"}
    table = _run(fresh, "identities", "list")
    assert "2 identities" in table.stdout and "is busy" in table.stdout
    assert "rings until the ring timeout" in table.stdout
    table = _run(fresh, "device", "list")
    assert "2 scripted device(s)" in table.stdout and "1.5 s" in table.stdout


def test_device_set_refuses_what_it_cannot_do(fresh: CallgridServer) -> None:
    agent = _identity(fresh)
    none = _run(fresh, "device", "set", agent)
    assert none.returncode == 2 and "choose one of --answer" in none.stderr
    two = _run(fresh, "device", "set", agent, "--answer", "--busy")
    assert two.returncode == 2
    bad = _run(fresh, "device", "set", agent, "--answer", "--delay", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr
    misplaced = _run(fresh, "device", "set", agent, "--busy", "--delay", "2s")
    assert misplaced.returncode == 2 and "use it with --answer" in misplaced.stderr
    too_slow = _run(fresh, "device", "set", agent, "--answer", "--delay", "2h")
    assert too_slow.returncode == 1 and "answerDelayMs must be between 0 and 3600000" in too_slow.stderr
    unknown = _run(fresh, "device", "set", agent[:-4] + "0000", "--answer")
    assert unknown.returncode == 1 and "error" in unknown.stderr and "Traceback" not in unknown.stderr
    # Nothing was scripted by the refused commands.
    assert _json(fresh, "device", "list") == []


def test_calls_show_of_an_unknown_call_says_so(fresh: CallgridServer) -> None:
    result = _run(fresh, "calls", "show", "no-such-call")
    assert result.returncode == 1
    assert "No call with serverCallId 'no-such-call'" in result.stderr and "Traceback" not in result.stderr
    assert _json(fresh, "calls", "list") == []
