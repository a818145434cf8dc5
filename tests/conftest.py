from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.security import ensure_tls_material
from tests.support.server import CallgridProcess, sdk_env, trust_session_ca
from tests.support.webhook import WebhookReceiver

# One CA for every test server, trusted before test modules import aiohttp (which reads SSL_CERT_FILE once).
_SESSION_TLS = Path(tempfile.mkdtemp(prefix="callgrid-test-tls-"))
atexit.register(shutil.rmtree, _SESSION_TLS, ignore_errors=True)
ensure_tls_material(_SESSION_TLS)
trust_session_ca(_SESSION_TLS)


@pytest.fixture(scope="session")
def shared_tls() -> Path:
    return _SESSION_TLS


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
