from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.testing import CallgridServer


@pytest.fixture(scope="module")
def no_probation(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    """A server whose endpoints never go on probation, for tests that fail many deliveries on purpose;
    its retries have no jitter, so events that failed together fall due together (and are batched)."""
    env = {"CALLGRID_PROBATION_FAILURE_THRESHOLD": "0", "CALLGRID_RETRY_JITTER": "0"}
    server = CallgridServer(tmp_path_factory.mktemp("no-probation"), tls_dir=callgrid_tls_dir, env=env).start()
    yield server
    server.stop()


@pytest.fixture
def quiet(no_probation: CallgridServer, callgrid: CallgridServer) -> CallgridServer:
    no_probation.reset()
    return no_probation
