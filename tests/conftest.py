"""The project's tests run on its own pytest plugin (callgrid.testing.plugin): the `callgrid` server
(reset before each test), `webhook`, `callgrid_tls_dir` and the rest come from there."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from callgrid.testing import CallgridServer

if not any(ep.value == "callgrid.testing.plugin" for ep in entry_points(group="pytest11")):
    # An install from before the entry point (or none, with src on PYTHONPATH): load the plugin here.
    pytest_plugins = ["callgrid.testing.plugin"]


@pytest.fixture
def fresh(callgrid: CallgridServer) -> CallgridServer:
    """The tests' older name for the plugin's `callgrid`: the session's server, reset."""
    return callgrid
