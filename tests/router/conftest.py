from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.communication.identity import CommunicationIdentityClient

from callgrid.testing import CallgridServer
from tests.router.support import RouterServer


@pytest.fixture
def router(fresh: CallgridServer, tmp_path: Path) -> Iterator[RouterServer]:
    server = RouterServer(fresh, tmp_path / "router.db").start()
    yield server
    server.stop()


@pytest.fixture
def new_user(fresh: CallgridServer):  # type: ignore[no-untyped-def]
    identity = CommunicationIdentityClient.from_connection_string(fresh.connection_string)

    def create() -> str:
        return str(identity.create_user().properties["id"])

    return create
