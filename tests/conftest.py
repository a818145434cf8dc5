from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.security import ensure_tls_material
from tests.support.server import CallgridProcess, sdk_env
from tests.support.webhook import WebhookReceiver


@pytest.fixture(scope="session")
def shared_tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ensure_tls_material(directory)
    return directory


@pytest.fixture(scope="session")
def callgrid(tmp_path_factory: pytest.TempPathFactory, shared_tls: Path) -> Iterator[CallgridProcess]:
    """One callgrid server (virtual clock) for the session; tests that need a clean slate reset it."""
    server = CallgridProcess(tmp_path_factory.mktemp("callgrid"), tls_dir=shared_tls).start()
    sdk_env(server)
    yield server
    server.stop()


@pytest.fixture
def fresh(callgrid: CallgridProcess) -> CallgridProcess:
    callgrid.reset()
    return callgrid


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
