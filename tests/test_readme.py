"""The README's story beside `make run`: its shell block, read from README.md and run as written (in a folder
laid out like a clone: `.venv/bin`, `examples/`, the demo's `.callgrid`) while `callgrid demo` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from callgrid.testing import free_port
from tests.cli.test_demo import Demo

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme-story:"


def _story() -> str:
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "README.md lost its tested story block"
    return text.split(MARKER, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


def _clone(tmp_path: Path) -> Path:
    """A folder that looks like the repository to the README's commands, with this test's venv and code."""
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(sys.prefix)  # the whole venv: its python finds pyvenv.cfg and site-packages
    (clone / "examples").symlink_to(REPO / "examples")
    return clone


def _env() -> dict[str, str]:
    # No CALLGRID_DATA_DIR: the commands must find the demo's data directory themselves, as in a clone.
    env = {k: v for k, v in os.environ.items() if k != "CALLGRID_DATA_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return {**env, "COLUMNS": "250"}


def test_the_readme_story_works_beside_make_run(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    story = _story()
    assert "8000" in story
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + story.replace(
        "8000",
        str(free_port()),  # the README's port may be taken on a shared machine
    )
    demo = Demo(clone / ".callgrid", free_port(), free_port())  # `make run`: callgrid demo --data-dir .callgrid
    try:
        demo.call()  # the demo's own story still works
        ran = subprocess.run(["bash", "-c", script], cwd=clone, env=_env(), capture_output=True, text=True, timeout=240)
        out = ran.stdout + ran.stderr
        assert ran.returncode == 0, out
        for step in (
            "owned +14255550123",
            "subscription my-app: Succeeded",
            "IncomingCall delivered",
            "MY-APP",
            "redirected",
            "answered",
            "state: connected",
            "redirected to 8:acs:",  # the example app's own log line
        ):
            assert step in out, f"{step!r} missing from:\n{out}"
        assert "AlreadyOwned" not in out and "8522" not in out, out
        # The router commands read the database the demo's router writes, found from anywhere in the clone.
        (clone / "src").mkdir()
        log = subprocess.run(
            [str(clone / ".venv" / "bin" / "callgrid"), "router", "log"],
            cwd=clone / "src",
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert log.returncode == 0, log.stderr
        assert "+14255551212" in log.stdout and "redirect" in log.stdout, log.stdout
        # The README's own number went to the app, not to the router.
        assert "+14255550123" not in log.stdout, log.stdout
    finally:
        demo.stop()
