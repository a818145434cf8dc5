"""read_body (api/body.py) on an ASGI receive of its own: a body that stalls is refused (408's error), each
chunk it waits for has the whole idle time, and a body already there is read without waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from callgrid.api import body
from callgrid.errors import RequestTimeout


def _request(chunks: list[tuple[float, bytes, bool]]) -> Request:
    """A request whose body arrives as `chunks`: (delay before it, bytes, more to come)."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            await asyncio.Event().wait()  # the client sends nothing more
        delay, data, more = pending.pop(0)
        if delay:
            await asyncio.sleep(delay)
        return {"type": "http.request", "body": data, "more_body": more}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    return Request(scope, receive)


async def test_a_stalled_body_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body, "IDLE_SECONDS", 0.05)
    request = _request([(0, b"{", True)])
    with pytest.raises(RequestTimeout):
        await body.read_body(request, 1024)


async def test_each_chunk_has_the_whole_idle_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body, "IDLE_SECONDS", 0.2)
    request = _request([(0.1, b"[1,", True), (0.1, b"2,", True), (0.1, b"3]", False)])
    seen: list[bytes] = []
    assert await body.read_body(request, 1024, on_chunk=seen.append) == b"[1,2,3]"
    assert seen == [b"[1,", b"2,", b"3]"]
    assert await request.body() == b"[1,2,3]"


async def test_a_body_already_there_is_read_in_the_same_turn() -> None:
    request = _request([(0, b"{}", False)])
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticking = asyncio.create_task(tick())
    await asyncio.sleep(0)
    before = ticks
    assert await body.read_body(request, 1024) == b"{}"
    ticking.cancel()
    # Not a turn of the loop spent waiting for a task of its own (as asyncio.wait_for did on Python 3.11).
    assert ticks == before
