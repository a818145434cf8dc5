"""`callgrid scenario run|list` as a user runs them: a server of their own, progress per step, the diff."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WRONG = """\
name: The caller is expected to be someone else
given:
  numbers: ["+14255550100"]
steps:
  - call: "+14255550100"
    from: "+12065550123"
  - expect: IncomingCall
    where:
      from.phoneNumber.value: "+12065550999"
    within: 1s
  - answer:
"""


def _callgrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "callgrid", "scenario", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_list_names_the_twelve_shipped_scenarios() -> None:
    result = _callgrid("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12
    assert lines[0].startswith("identity-to-identity-add-participant  A bot answers")


def test_run_shows_each_step_and_the_diff_of_a_failure(tmp_path: Path) -> None:
    (tmp_path / "wrong.scenario.yaml").write_text(WRONG)
    result = _callgrid("run", "identity-to-number-redirect", "wrong.scenario.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "✓  1 device +14255550111 does answer" in out
    assert "✓  6 state connected" in out
    assert "✗  2 expect IncomingCall where from.phoneNumber.value = '+12065550999' within 1s" in out
    assert "no IncomingCall matching arrived within 1 s; the closest of 1 seen (- expected, + seen):" in out
    assert "wrong.scenario.yaml:7" in out
    assert '- from.phoneNumber.value: "+12065550999"' in out
    assert '+ from.phoneNumber.value: "+12065550123"' in out
    assert "·  3 answer" in out
    assert "1 passed, 1 failed" in out


def test_run_checks_every_file_before_starting_anything(tmp_path: Path) -> None:
    (tmp_path / "a.scenario.yaml").write_text("name: a\nsteps:\n  - advance: soon\n")
    (tmp_path / "b.scenario.yaml").write_text("name: b\nsteps:\n  - ring: $bob\n")
    result = _callgrid("run", "a.scenario.yaml", "b.scenario.yaml", "missing.scenario.yaml", cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr
    assert "a.scenario.yaml:3: `advance`: `soon` is not a duration" in err
    assert "b.scenario.yaml:3: unknown action `ring`" in err
    assert "missing.scenario.yaml: cannot read" in err
    assert "3 problems: nothing was run." in err
    assert result.stdout == ""
