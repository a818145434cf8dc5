"""http_server.run: uvicorn is asked for access lines only at a log level that shows them."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from callgrid import http_server


@pytest.mark.parametrize(
    ("log_level", "access_log"),
    [("trace", True), ("debug", True), ("info", True), ("INFO", True), ("warning", False), ("error", False)],
)
def test_access_lines_only_when_they_can_be_seen(
    monkeypatch: pytest.MonkeyPatch, log_level: str, access_log: bool
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    http_server.run(object(), host="127.0.0.1", port=0, log_level=log_level, headers_timeout=30, keep_alive=5)
    assert seen["access_log"] is access_log
    assert seen["log_level"] == log_level
