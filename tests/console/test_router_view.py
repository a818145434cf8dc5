"""The console with a router attached: its assignments, and its decision for a call as it happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.identity import CommunicationIdentityClient
from playwright.sync_api import expect

from callgrid.router.models import Assignment
from callgrid.testing import CallgridServer
from tests.console.conftest import log_in
from tests.router.support import RouterServer

OWNED = "+14255551212"
CALLER = "+12065550100"


@pytest.fixture
def router(callgrid: CallgridServer, tmp_path: Path) -> Iterator[RouterServer]:
    server = RouterServer(callgrid, tmp_path / "router.db").start()
    yield server
    server.stop()


def test_the_router_tab_shows_assignments_and_decisions(
    page: Any, callgrid: CallgridServer, router: RouterServer, artifacts: Path
) -> None:
    user = str(
        CommunicationIdentityClient.from_connection_string(callgrid.connection_string).create_user().properties["id"]
    )
    callgrid.own_number(OWNED)
    callgrid.set_device(user, "answer")
    router.store.assign(Assignment(OWNED, user, "Ada"))
    router.subscribe()
    log_in(page, callgrid)
    page.click('#tabs a[data-tab="router"]')
    expect(page.locator("#router")).to_contain_text("No router attached")

    # A wrong key is refused, with the router's answer.
    page.fill('#attach-router input[name="url"]', router.url)
    page.fill('#attach-router input[name="apiKey"]', "not-the-key")
    page.click("#attach-router button")
    expect(page.locator("#flash.error")).to_contain_text("HTTP 401")

    page.fill('#attach-router input[name="apiKey"]', router.state.api_key)
    page.click("#attach-router button")
    expect(page.locator("#flash.ok")).to_contain_text("1 numbers assigned")
    row = page.locator(f'table.assignments tr[data-number="{OWNED}"]')
    expect(row).to_contain_text(user)
    expect(row).to_contain_text("Ada")

    # A call to the number: the router's decision appears, and the call connects to the identity.
    placed = callgrid.place_call(CALLER, OWNED)
    decision = page.locator(f'table.decisions tr[data-server-call-id="{placed["serverCallId"]}"]')
    expect(decision).to_contain_text("assigned")
    expect(decision).to_contain_text(f"redirected to {user}")
    page.screenshot(path=str(artifacts / "router.png"), full_page=True)

    page.locator('#router form[data-action="/console/actions/router/detach"] button').click()
    expect(page.locator("#router")).to_contain_text("No router attached")
