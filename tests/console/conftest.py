"""Chromium for the console's tests: Debian's own build (/usr/bin/chromium, installed by .ci/run), headless
and without its sandbox (containers); Playwright never downloads a browser here. Screenshots go to
`test-artifacts/console/` (ignored by git), or to $CALLGRID_TEST_ARTIFACTS."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgrid.testing import CallgridServer

CHROMIUM = os.environ.get("CALLGRID_CHROMIUM", "/usr/bin/chromium")


# Module-scoped: the sync API runs an event loop of its own in this thread while it lives, which asyncio
# tests elsewhere in the session would trip over.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: the console's tests need Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


def launch(playwright: Any, *args: str) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", *args])


@pytest.fixture(scope="module")
def chromium(playwright: Any) -> Iterator[Any]:
    browser = launch(playwright)
    yield browser
    browser.close()


def new_page(browser: Any, server: CallgridServer) -> Any:
    """A fresh browser context (no cookie) on `server`, which it trusts as the docs say to."""
    context = browser.new_context(
        ignore_https_errors=True, base_url=server.endpoint, viewport={"width": 1400, "height": 1000}
    )
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    root = Path(os.environ.get("CALLGRID_TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts")
    directory = root / "console" / re.sub(r"[^\w.-]+", "_", request.node.name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def page(chromium: Any, callgrid: CallgridServer) -> Iterator[Any]:
    page = new_page(chromium, callgrid)
    yield page
    page.context.close()


def log_in(page: Any, server: CallgridServer) -> None:
    """Through the login form, with the token `callgrid env` printed."""
    page.goto("/console/")
    page.wait_for_url("**/console/login**")
    page.fill("#token", server.env["CALLGRID_CONSOLE_TOKEN"])
    page.click("#login")
    page.wait_for_url("**/console/")
    page.wait_for_selector("#status.live")
