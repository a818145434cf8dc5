"""One data directory for every command: named (--data-dir, $CALLGRID_DATA_DIR), else the nearest `.callgrid`
upwards, else the per-user folder; client commands that find no server say so and create nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from callgrid.datadir import locate_data_dir, user_data_dir
from callgrid.testing import CallgridServer, free_port


def _callgrid(*args: str, cwd: Path, home: Path, data_dir_env: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CALLGRID_DATA_DIR"}
    env.update({"COLUMNS": "250", "XDG_DATA_HOME": str(home / "share"), "HOME": str(home)})
    if data_dir_env is not None:
        env["CALLGRID_DATA_DIR"] = data_dir_env
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_the_rule_named_then_upwards_then_per_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLGRID_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    deep = tmp_path / "project" / "src" / "pkg"
    deep.mkdir(parents=True)
    assert locate_data_dir(cwd=deep).path == tmp_path / "share" / "callgrid" == user_data_dir()
    assert not locate_data_dir(cwd=deep).explicit
    (tmp_path / "project" / ".callgrid").mkdir()
    found = locate_data_dir(cwd=deep)
    assert found.path == (tmp_path / "project" / ".callgrid").resolve() and not found.explicit
    assert "nearest .callgrid" in found.how
    (deep / ".callgrid").write_text("a file, not a data directory")
    assert locate_data_dir(cwd=deep).path == found.path
    monkeypatch.setenv("CALLGRID_DATA_DIR", str(tmp_path / "named"))
    assert locate_data_dir(cwd=deep).path == tmp_path / "named" and locate_data_dir(cwd=deep).explicit
    assert locate_data_dir(Path("flag"), cwd=deep).path == Path("flag")


def test_commands_outside_any_data_dir_say_so_and_create_nothing(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "elsewhere"
    work.mkdir(parents=True)
    above = [p for p in work.parents if (p / ".callgrid").is_dir()]
    assert not above, f"a .callgrid folder above the test's temporary directory would be found: {above}"
    for args in (["numbers", "list"], ["env"], ["calls", "list", "--json"], ["device", "list"], ["clock", "show"]):
        result = _callgrid(*args, cwd=work, home=home)
        assert result.returncode == 1, result.stdout
        message = " ".join(result.stderr.split())
        assert f"no callgrid server has run with the data directory {home / 'share' / 'callgrid'}" in message
        assert "the per-user default" in message and "callgrid serve" in message and "CALLGRID_DATA_DIR" in message
        assert result.stdout == ""
    router = _callgrid("router", "log", cwd=work, home=home)
    assert router.returncode == 1 and "no router database at" in " ".join(router.stderr.split())
    assert not (home / "share").exists()  # no new CA, key or database anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_commands_find_a_running_server_upwards_or_by_variable(callgrid: CallgridServer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "a" / "b").mkdir(parents=True)
    (project / ".callgrid").symlink_to(callgrid.data_dir)
    callgrid.own_number("+14255550180")
    found = _callgrid("numbers", "list", "--json", cwd=project / "a" / "b", home=tmp_path / "home")
    assert found.returncode == 0, found.stderr
    assert [n["phoneNumber"] for n in json.loads(found.stdout)] == ["+14255550180"]
    env = _callgrid("env", cwd=project / "a", home=tmp_path / "home")
    assert env.returncode == 0, env.stderr
    assert f"CALLGRID_ENDPOINT=https://localhost:{callgrid.port}" in env.stdout
    by_variable = _callgrid(
        "health", "--json", cwd=tmp_path, home=tmp_path / "home", data_dir_env=str(callgrid.data_dir)
    )
    assert by_variable.returncode == 0, by_variable.stderr
    assert json.loads(by_variable.stdout)["status"] == "ok"


def test_a_stopped_server_is_named_by_its_endpoint(tmp_path: Path, callgrid_tls_dir: Path) -> None:
    server = CallgridServer(tmp_path / "data", tls_dir=callgrid_tls_dir).start()
    port = server.port
    server.stop()
    result = _callgrid("numbers", "list", "--data-dir", str(server.data_dir), cwd=tmp_path, home=tmp_path / "home")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"cannot reach callgrid at https://localhost:{port} (connection refused)" in message
    assert "Is `callgrid serve` running?" in message and "Traceback" not in message


def test_serve_says_which_rule_chose_its_data_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALLGRID_DATA_DIR"}
    env.update({"COLUMNS": "250", "XDG_DATA_HOME": str(tmp_path / "share"), "HOME": str(tmp_path / "home")})
    args = [sys.executable, "-m", "callgrid", "serve", "--port", str(free_port()), "--clock", "virtual"]
    serve = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    assert serve.stdout is not None
    try:
        banner = [serve.stdout.readline() for _ in range(7)]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    shown = " ".join("".join(banner).split())
    assert f"(data dir {tmp_path / 'share' / 'callgrid'})" in shown
    assert "data dir chosen by the per-user default" in shown
    assert (tmp_path / "share" / "callgrid" / "server.json").is_file()  # serve, unlike clients, makes its own
