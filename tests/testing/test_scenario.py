"""Scenario files are read and checked before anything runs: every problem at once, each at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgrid.testing.scenario import ScenarioError, load, loads, parse_duration
from callgrid.testing.scenario_runner import holds, lookup, shipped_scenarios

GOOD = """\
name: A customer calls; the app answers
given:
  users: [agent]
  numbers: ["+14255550100"]
steps:
  - call: +14255550100
    from: "+12065550123"
  - expect: IncomingCall
    where:
      to.phoneNumber.value: +14255550100
      from.rawId: {startsWith: "4:"}
    within: 2s
  - answer:
  - advance: 5m
  - device: $agent
    does: answer
    after: 500ms
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as raised:
        loads(text, "story.scenario.yaml")
    return raised.value.problems


def test_a_good_file_reads_as_steps_with_their_lines() -> None:
    scenario = loads(GOOD, "story.scenario.yaml")
    assert scenario.name == "A customer calls; the app answers"
    assert scenario.users == ["agent"]
    assert scenario.numbers == ["+14255550100"]
    assert [(s.action, s.line) for s in scenario.steps] == [
        ("call", 6),
        ("expect", 8),
        ("answer", 13),
        ("advance", 14),
        ("device", 15),
    ]
    call, expect, _, advance, device = scenario.steps
    # YAML 1.1 reads an unquoted +14255550100 as a number; a scenario keeps it the phone number it is.
    assert call.argument == "+14255550100"
    assert expect.options == {
        "where": {"to.phoneNumber.value": "+14255550100", "from.rawId": {"startsWith": "4:"}},
        "within": 2.0,
    }
    assert advance.argument == 300.0
    assert device.options == {"does": "answer", "after": 0.5}
    assert scenario.subscription.events == ["Microsoft.Communication.IncomingCall"]


def test_every_problem_is_reported_at_its_line_with_a_hint() -> None:
    found = problems(
        """\
name: broken
given:
  users: [agent]
  numbers: ["4255550100"]
steps:
  - answr:
  - call: $bob
  - expect: IncomingCall
    whre: {to.rawId: $agent}
  - advance: soon
  - device: $agent
    does: explode
  - fault: operation
    url: http://x
"""
    )
    assert found == [
        "story.scenario.yaml:4: `4255550100` is not a phone number in E.164 form (+14255550100)",
        "story.scenario.yaml:6: unknown action `answr` (did you mean `answer`?); the actions are: call, press, say, "
        "leave, device, create call, answer, reject, redirect, add participant, transfer, play, recognize, "
        "hang up, expect, expect no, state, fault, advance",
        "story.scenario.yaml:7: `$bob` is not defined: add it to `given.users` (defined: $agent, $callbacks, $webhook)",
        "story.scenario.yaml:7: `call` needs `from:` (who dials: a phone number or $user)",
        "story.scenario.yaml:9: `expect` has no option `whre` (did you mean `where`?); it takes `where`, `within`",
        "story.scenario.yaml:10: `advance`: `soon` is not a duration (30, 30s, 5m, 1h, 500ms)",
        "story.scenario.yaml:12: `does`: `explode` is not one of ring, answer, decline, busy",
        "story.scenario.yaml:13: a operation fault needs `operation:`",
        "story.scenario.yaml:13: a operation fault takes no `url` (it takes operation, status, code, count)",
    ]


def test_steps_that_need_an_earlier_step_say_which() -> None:
    found = problems(
        """\
name: out of order
steps:
  - play: hello
  - answer:
  - press: "1"
    by: "+12065550123"
"""
    )
    assert found == [
        "story.scenario.yaml:3: `play` needs the app in a call: `answer` or `create call` before it",
        "story.scenario.yaml:4: `answer` acts on an IncomingCall: add `- expect: IncomingCall` before it",
        "story.scenario.yaml:5: `press` acts on a placed call: `call` or `create call` before it",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: [", "story.scenario.yaml:2: not valid YAML: "),
        ("- call: x", "story.scenario.yaml: a scenario is a mapping with `name`, `given` and `steps`"),
        ("name: x\n", "story.scenario.yaml:1: `steps` is missing: a list of steps, each `- action: argument`"),
        ("name: x\nsteps:\n  - just words\n", "story.scenario.yaml:3: a step is `- action: argument`"),
        ("name: x\nsteps: []\nextra: 1\n", "story.scenario.yaml:3: the scenario has no `extra`"),
        (
            "name: x\ngiven:\n  subscription: {schema: Soap}\nsteps:\n  - advance: 1\n",
            "story.scenario.yaml:3: `schema` is EventGrid or CloudEvents, not `Soap`",
        ),
        (
            "name: x\nsteps:\n  - call: '+1425555'\n    from: '+12065550123'\n    play: hi\n",
            "story.scenario.yaml:5: `play` is an action: start a new step with `- play:`",
        ),
        (
            "name: x\nsteps:\n  - call: '+14255550100'\n    from: '+12065550123'\n"
            "  - expect: IncomingCall\n    where: {to.rawId: {near: 1}}\n",
            "story.scenario.yaml:6: the test of `to.rawId` has no `near`",
        ),
    ],
)
def test_malformed_files(text: str, message: str) -> None:
    assert any(p.startswith(message) for p in problems(text)), problems(text)


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.scenario\.yaml: cannot read"):
        load(tmp_path / "missing.scenario.yaml")


def test_durations() -> None:
    assert [parse_duration(v) for v in (30, 2.5, "30s", "5m", "1h", "500ms", " 2 s ")] == [
        30.0,
        2.5,
        30.0,
        300.0,
        3600.0,
        0.5,
        2.0,
    ]
    assert [parse_duration(v) for v in (-1, True, "soon", "5 days", None)] == [None] * 5


def test_predicates_on_event_data() -> None:
    event = {"data": {"to": {"rawId": "4:+1425"}, "tones": ["one", "two"], "code": 200, "participants": [{"id": "a"}]}}
    assert lookup(event, "to.rawId") == "4:+1425"
    assert lookup(event, "participants.0.id") == "a"
    assert holds("4:+1425", lookup(event, "to.rawId"))
    assert holds("200", lookup(event, "code"))  # YAML and JSON disagree on scalars; readers do not
    assert holds({"startsWith": "4:"}, lookup(event, "to.rawId"))
    assert holds({"endsWith": "1425"}, lookup(event, "to.rawId"))
    assert holds({"contains": "two"}, lookup(event, "tones"))
    assert holds({"matches": r"^4:\+\d+$"}, lookup(event, "to.rawId"))
    assert holds({"oneOf": [100, 200]}, lookup(event, "code"))
    assert holds({"not": 500}, lookup(event, "code"))
    assert holds({"exists": False}, lookup(event, "nowhere.at.all"))
    assert holds(["one", "two"], lookup(event, "tones"))
    assert not holds("x", lookup(event, "nowhere"))
    assert not holds({"exists": True}, lookup(event, "participants.5"))
    assert not holds({"startsWith": "8:"}, lookup(event, "to.rawId"))


def test_twelve_scenarios_ship_one_per_cell_and_all_read() -> None:
    names = [item.name for item in shipped_scenarios()]
    cells = [
        f"{pair}-{kind}.scenario.yaml"
        for pair in ("identity-to-identity", "identity-to-number", "pstn-to-number")
        for kind in ("add-participant", "call", "redirect", "transfer")
    ]
    assert names == cells
    for item in shipped_scenarios():
        loads(item.read_text(encoding="utf-8"), item.name)
