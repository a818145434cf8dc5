from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import CallgridProcess


@pytest.fixture(scope="module")
def no_probation(tmp_path_factory: pytest.TempPathFactory, shared_tls: Path) -> Iterator[CallgridProcess]:
    """A server whose endpoints never go on probation, for tests that fail many deliveries on purpose;
    its retries have no jitter, so events that failed together fall due together (and are batched)."""
    env = {"CALLGRID_PROBATION_FAILURE_THRESHOLD": "0", "CALLGRID_RETRY_JITTER": "0"}
    server = CallgridProcess(tmp_path_factory.mktemp("no-probation"), tls_dir=shared_tls, env=env).start()
    yield server
    server.stop()


@pytest.fixture
def quiet(no_probation: CallgridProcess, callgrid: CallgridProcess) -> CallgridProcess:
    no_probation.reset()
    return no_probation
