"""`callgrid serve` refuses what it cannot serve safely: a data directory another server holds, a damaged or
unusable database; each with a clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from callgrid.testing import CallgridServer, free_port


def _callgrid(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _serve(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    return _callgrid("serve", "--data-dir", str(data_dir), "--port", str(port), "--clock", "virtual")


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    return " ".join(output.split())  # rich wraps long lines


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path, callgrid_tls_dir: Path) -> None:
    first = CallgridServer(tmp_path / "data", tls_dir=callgrid_tls_dir).start()
    try:
        message = _refused(_serve(first.data_dir, free_port()))
        assert "in use by a running callgrid server" in message and f"port {first.port}" in message
        assert str(first.data_dir.resolve()) in message
        # The refused server changed nothing: clients still find the first one.
        assert json.loads((first.data_dir / "server.json").read_text())["port"] == first.port
        env = _callgrid("env", "--data-dir", str(first.data_dir))
        assert env.returncode == 0, env.stderr
        assert f"CALLGRID_ENDPOINT=https://localhost:{first.port}" in env.stdout
        assert first.client().own_number("+14255550100")["phoneNumber"] == "+14255550100"
    finally:
        first.stop()
    # Once it has stopped, the data directory is free again.
    second = CallgridServer(first.data_dir, tls_dir=callgrid_tls_dir).start()
    try:
        assert [n["phoneNumber"] for n in second.client().list_numbers()["phoneNumbers"]] == ["+14255550100"]
    finally:
        second.stop()


def test_a_database_with_damaged_pages_is_refused_at_start(tmp_path: Path, callgrid_tls_dir: Path) -> None:
    # SQLite's file, whichever store the other tests' servers use.
    sqlite = f"sqlite:///{(tmp_path / 'data' / 'callgrid.db').resolve()}"
    server = CallgridServer(tmp_path / "data", tls_dir=callgrid_tls_dir, store=sqlite).start()
    for i in range(200):
        server.client().own_number(f"+1425555{i:04d}")
    server.stop()
    db = server.data_dir / "callgrid.db"
    assert (
        not (server.data_dir / "callgrid.db-wal").exists() or (server.data_dir / "callgrid.db-wal").stat().st_size == 0
    )
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    # Scribble over every page but the first (the header and schema stay readable: the damage is found only
    # by reading the tables, as a request would).
    for offset in range(page, len(data), page):
        data[offset : offset + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    message = _refused(_serve(server.data_dir, free_port()))
    assert str(db.resolve()) in message and "damaged" in message and "backup" in message


def test_an_unusable_database_file_is_refused_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "callgrid.db").mkdir(parents=True)  # unreadable as a database, even for root
    message = _refused(_serve(data_dir, free_port()))
    assert str((data_dir / "callgrid.db").resolve()) in message and "cannot be used" in message
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "callgrid.db").write_bytes(b"this is not a database" * 200)
    message = _refused(_serve(garbage, free_port()))
    assert str((garbage / "callgrid.db").resolve()) in message and "not a database" in message


def test_an_empty_database_file_is_initialised_with_a_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "callgrid.db").touch()
    result = _callgrid("env", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "is empty (0 bytes); initialising a new store" in result.stderr
    assert "CALLGRID_CONNECTION_STRING" in result.stdout


def test_the_store_is_chosen_by_callgrid_store_and_the_banner_says_where_state_lives(
    tmp_path: Path, callgrid_tls_dir: Path
) -> None:
    from callgrid.testing.stores import drop_schema, fresh_postgres_url

    url, schema = fresh_postgres_url("banner")
    with_password = url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    server = CallgridServer(
        tmp_path / "data", tls_dir=callgrid_tls_dir, env={"CALLGRID_STORE": with_password, "COLUMNS": "250"}
    )
    try:
        server.start()
        banner = " ".join(server.log_path.read_text().split())
        assert f"state postgresql://postgres:***@127.0.0.1:5432/test?schema={schema} (schema {schema})" in banner
        assert "s3cret" not in banner
        assert not (tmp_path / "data" / "callgrid.db").exists()  # nothing in SQLite
        # A command beside the server finds the same store (server.json), without being told.
        env = _callgrid("env", "--data-dir", str(server.data_dir))
        assert env.returncode == 0, env.stderr
        assert f"CALLGRID_ACCESS_KEY={server.access_key}" in env.stdout.replace("'", "")
    finally:
        server.stop()
        drop_schema(schema)


def test_an_unreachable_database_is_refused_with_its_address(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = _callgrid(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--store",
        f"postgresql://callgrid:pw@127.0.0.1:{port}/callgrid",
    )
    message = _refused(result)
    assert f"The PostgreSQL store postgresql://callgrid:***@127.0.0.1:{port}/callgrid cannot be used" in message
    assert "pw@" not in message


def test_an_unknown_sip_transport_is_refused(tmp_path: Path) -> None:
    result = _callgrid("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--sip-port",
                       str(free_port()), "--sip-transport", "sctp")  # fmt: skip
    assert "--sip-transport must be udp or tcp, not 'sctp'" in _refused(result)
    assert result.returncode == 2


def test_a_sip_session_interval_below_the_minimum_is_refused(tmp_path: Path) -> None:
    result = _callgrid("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--sip-port",
                       str(free_port()), "--sip-session-expires", "60")  # fmt: skip
    assert "--sip-session-expires must be 0 (off) or at least --sip-min-se" in _refused(result)
    assert result.returncode == 2
