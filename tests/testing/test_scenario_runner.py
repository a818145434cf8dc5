"""Scenarios run against a real callgrid through the official SDKs: the twelve shipped ones pass, and a
wrong expectation fails at its step with what was expected against what was seen."""

from __future__ import annotations

from importlib.resources.abc import Traversable

import pytest

from callgrid.testing import CallgridServer
from callgrid.testing.scenario import loads
from callgrid.testing.scenario_runner import StepResult, run_scenario, shipped_scenarios

SHIPPED = shipped_scenarios()


@pytest.mark.parametrize("item", SHIPPED, ids=[item.name.split(".")[0] for item in SHIPPED])
async def test_the_shipped_scenarios_pass(callgrid: CallgridServer, item: Traversable) -> None:
    scenario = loads(item.read_text(encoding="utf-8"), item.name)
    seen: list[tuple[int, str]] = []
    result = await run_scenario(scenario, callgrid, progress=lambda r: seen.append((r.index, r.status)))
    assert result.passed, result.report()
    # Progress says each step started, then how it ended.
    assert seen == [(i, s) for i in range(len(scenario.steps)) for s in ("running", "passed")]


WRONG = """\
name: The app expects the call at the agent, but it rings the number
given:
  users: [agent]
  numbers: ["+14255550100"]
steps:
  - call: "+14255550100"
    from: "+12065550123"
  - expect: IncomingCall
    where:
      to.rawId: $agent
      from.phoneNumber.value: "+12065550123"
    within: 1s
  - answer:
"""


async def test_a_wrong_expectation_fails_with_a_diff(callgrid: CallgridServer) -> None:
    result = await run_scenario(loads(WRONG, "wrong.scenario.yaml"), callgrid)
    assert not result.passed
    assert [s.status for s in result.steps] == ["passed", "failed", "skipped"]
    report = result.report().splitlines()
    agent = report[3].split(": ", 1)[1]
    assert agent.startswith('"8:acs:')
    assert report == [
        "The app expects the call at the agent, but it rings the number",
        "step 2 (wrong.scenario.yaml:8): expect IncomingCall where to.rawId = '$agent', "
        "from.phoneNumber.value = '+12065550123' within 1s",
        "  no IncomingCall matching arrived within 1 s; the closest of 1 seen (- expected, + seen):",
        f"  - to.rawId: {agent}",
        '  + to.rawId: "4:+14255550100"',
        '    from.phoneNumber.value: "+12065550123"',
        "  received: IncomingCall",
    ]


async def test_an_event_that_never_came_lists_what_did(callgrid: CallgridServer) -> None:
    story = """\
name: nobody answers
given:
  numbers: ["+14255550100"]
steps:
  - call: "+14255550100"
    from: "+12065550123"
  - expect: CallConnected
    within: 300ms
"""
    result = await run_scenario(loads(story), callgrid)
    failed = result.failure
    assert failed is not None
    assert (failed.message, failed.diff) == ("no CallConnected arrived within 0.3 s", ["received: IncomingCall"])


async def test_expect_no_state_and_fails_with_report_the_surprise(callgrid: CallgridServer) -> None:
    story = """\
name: surprises
given:
  numbers: ["+14255550100"]
steps:
  - call: "+14255550100"
    from: "+12065550123"
  - expect no: IncomingCall
    within: 2s
"""
    failed = (await run_scenario(loads(story), callgrid)).failure
    assert failed is not None
    assert failed.message == "a IncomingCall arrived, and none was expected:"

    story = story.replace("  - expect no: IncomingCall\n    within: 2s\n", "  - state: connected\n    within: 200ms\n")
    failed = (await run_scenario(loads(story), callgrid, reset=True)).failure
    assert failed is not None
    assert failed.message == "the call did not become connected within 0.2 s"
    assert failed.diff[:2] == ["- state: connected", "+ state: ringing"]

    story = story.replace(
        "  - state: connected\n    within: 200ms\n",
        "  - expect: IncomingCall\n  - redirect: '+14255550111'\n    fails with: '8523'\n",
    )
    failed = (await run_scenario(loads(story), callgrid, reset=True)).failure
    assert failed is not None
    assert failed.message == "expected it to fail with 8523; it succeeded"


async def test_faults_from_a_scenario_are_removed_when_it_ends(callgrid: CallgridServer) -> None:
    story = """\
name: a fault left behind would break the next test
steps:
  - fault: operation
    operation: answerCall
    status: 400
"""
    steps: list[StepResult] = []
    result = await run_scenario(loads(story), callgrid, progress=steps.append)
    assert result.passed, result.report()
    assert callgrid.faults.list() == []


async def test_the_other_actions_and_a_filtered_cloud_events_subscription(callgrid: CallgridServer) -> None:
    story = """\
name: the app calls a user, speaks and leaves; then rejects a call for its number
given:
  users: [ada, bob]
  numbers: ["+14255550100"]
  subscription:
    events: [IncomingCall]
    to: ["+14255550100"]
    schema: CloudEvents
steps:
  - device: $bob
    does: answer
  - create call: $bob
  - expect: CallConnected
  - play: Hello Bob.
    to: $bob
  - expect: PlayStarted
  - say: hello there
    by: $bob
  - hang up:
  - expect: CallDisconnected
  - call: $bob                  # not for the subscription's number: filtered out
    from: $ada
  - expect no: IncomingCall
    within: 300ms
  - call: "+14255550100"
    from: $ada
  - expect: IncomingCall
    where:
      to.rawId: "4:+14255550100"
  - reject: busy
  - state: disconnected
"""
    result = await run_scenario(loads(story), callgrid)
    assert result.passed, result.report()
