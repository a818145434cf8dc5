"""docs/testing.md runs as printed: its example app and tests are examples/webhook_app (and pass against
callgrid), its scenario passes, its code without pytest works, and its reference names every action."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callgrid.testing.scenario import ACTIONS

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "examples" / "webhook_app"


def _block_after(marker: str) -> str:
    found = re.search(re.escape(marker) + r"\n```\w+\n(.*?)\n```", DOC, re.S)
    assert found, f"no code block after {marker}"
    return found.group(1)


def _fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", DOC, re.S)


def test_the_doc_prints_the_example_files_as_they_are() -> None:
    for name in ("app.py", "test_app.py"):
        printed = _block_after(f"<!-- file: examples/webhook_app/{name} -->")
        assert printed == (EXAMPLE / name).read_text(encoding="utf-8").rstrip("\n"), name


def test_the_readme_links_the_doc() -> None:
    assert "docs/testing.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_reference_names_every_action() -> None:
    for action in ACTIONS:
        assert f"| `{action}` |" in DOC, action


def _example_project(pytester: pytest.Pytester) -> None:
    for name in ("app.py", "test_app.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_the_example_apps_tests_pass_against_callgrid(pytester: pytest.Pytester) -> None:
    _example_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_example_app_without_its_handshake_fails_where_it_should(pytester: pytest.Pytester) -> None:
    _example_project(pytester)
    app = pytester.path / "app.py"
    app.write_text(app.read_text().replace("if kind == VALIDATION:", "if kind == 'Validation':"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "greets")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: subscription * is *: http://127.0.0.1:*/api/events did not consent to the "
            "validation handshake"
        ]
    )


def test_the_docs_scenario_and_the_code_without_pytest_run(tmp_path: Path) -> None:
    (scenario,) = [b for b in _fenced("yaml") if b.startswith("name:")]
    (tmp_path / "support.scenario.yaml").write_text(scenario + "\n")
    (program,) = [b for b in _fenced("python") if "running()" in b]
    (tmp_path / "main.py").write_text(program + "\n")
    done = subprocess.run(
        [sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, env={**os.environ}, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'rawId': '4:+14255550100'" in done.stdout
    assert "A customer calls the support line and is handed to an agent: passed (13 steps)" in done.stdout
