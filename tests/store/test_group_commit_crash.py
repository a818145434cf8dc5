"""Group commit gives up no durability: every answered request survives a SIGKILL right after its answer."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callgrid.testing import CallgridServer

CALLS = 200


@pytest.fixture
def crashable(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, callgrid: CallgridServer
) -> Iterator[CallgridServer]:
    server = CallgridServer(tmp_path_factory.mktemp("group-commit-crash"), tls_dir=callgrid_tls_dir).start()
    yield server
    server.stop()


def test_calls_placed_together_are_all_there_after_a_sigkill(crashable: CallgridServer) -> None:
    number = "+14255550190"
    crashable.own_number(number)
    client = crashable.client()
    # 32 at a time: requests arriving together share commits; each is answered only once its commit is done.
    with ThreadPoolExecutor(max_workers=32) as pool:
        placed = list(
            pool.map(
                lambda i: client.request("POST", "/callgrid/v1/calls", {"from": f"+1206555{i:04d}", "to": number}),
                range(CALLS),
            )
        )
    crashable.restart(hard=True)  # SIGKILL right after the last answer
    survived = {c["serverCallId"] for c in crashable.client().request("GET", "/callgrid/v1/calls?limit=1000")["value"]}
    assert {c["serverCallId"] for c in placed} <= survived
    assert len(placed) == CALLS
