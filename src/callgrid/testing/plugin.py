"""The pytest plugin (entry point `callgrid`, in group pytest11): callgrid in a user's own test suite.

Fixtures:
    callgrid            a real callgrid server (virtual clock) for the session, reset before each test
    acs_connection_string
    webhook             a loopback receiver that consents to both handshakes and records events
    subscribe           subscribe a URL to the resource's events through ARM (filters, schema)
    place_call, set_device, clock
    faults              inject faults (failing deliveries, busy devices, failing operations); removed after
    call_automation_client, identity_client, phone_numbers_client   (official SDK, sync)
    call_automation_client_async, identity_client_async, phone_numbers_client_async   (`.aio`)

The test process trusts the session's CA before any conftest.py is imported (and so before aiohttp, which
reads SSL_CERT_FILE once, when imported): apps under test that build their own SDK clients work unchanged,
even where a conftest imports the app.
Scenario files (`*.scenario.yaml`, see callgrid.testing.scenario) are collected as tests: each runs on the
`callgrid` fixture's server, and a failing step reports what was expected against what was seen.

`-p no:callgrid` turns all of it off; `--callgrid-arg=--ring-timeout=10` passes options to `callgrid serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from callgrid.testing.scenario import SUFFIX, Scenario, ScenarioError, load
from callgrid.testing.scenario_runner import ScenarioResult, run_scenario
from callgrid.testing.server import CallgridServer, Clock, FaultInjector, make_tls_dir, trusting
from callgrid.testing.webhook import WebhookReceiver

_TLS_DIR = pytest.StashKey[Path]()
_EXIT = pytest.StashKey[ExitStack]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("callgrid")
    group.addoption(
        "--callgrid-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for the `callgrid serve` the callgrid fixture starts (repeatable)",
    )
    parser.addini(
        "callgrid_scope",
        default="session",
        help="how long one callgrid server lives: session (default), package, module or function; "
        "its state is reset before each test either way",
    )


def _server_scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = str(config.getini("callgrid_scope") or "session")
    if scope not in ("session", "package", "module", "class", "function"):
        raise pytest.UsageError(f"callgrid_scope = {scope}: use session, package, module, class or function")
    return scope


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before conftest.py files are imported: one that imports an app imports aiohttp, which would keep the
    # trust it found then. Runs where the plugin came by entry point or `-p`; otherwise pytest_configure.
    _trust_the_sessions_ca(early_config)


def pytest_configure(config: pytest.Config) -> None:
    _trust_the_sessions_ca(config)


def _trust_the_sessions_ca(config: pytest.Config) -> None:
    if _EXIT in config.stash:
        return
    stack = ExitStack()
    tls_dir = Path(tempfile.mkdtemp(prefix="callgrid-tls-"))
    stack.callback(shutil.rmtree, tls_dir, ignore_errors=True)
    make_tls_dir(tls_dir)
    stack.enter_context(trusting(tls_dir))
    config.stash[_TLS_DIR] = tls_dir
    config.stash[_EXIT] = stack


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_EXIT, None)
    if stack is not None:
        stack.close()


@pytest.fixture(scope="session")
def callgrid_tls_dir(pytestconfig: pytest.Config) -> Path:
    """The session's CA and certificate (`ca-bundle.pem` is what the test process trusts)."""
    return pytestconfig.stash[_TLS_DIR]


@pytest.fixture(scope=_server_scope)
def callgrid_server(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, pytestconfig: pytest.Config
) -> Iterator[CallgridServer]:
    """The session's server (or the module's..., by the `callgrid_scope` ini option), not reset: for
    fixtures of your own with a wider scope than a test."""
    extra = list(pytestconfig.getoption("callgrid_arg") or [])
    server = CallgridServer(tmp_path_factory.mktemp("callgrid"), tls_dir=callgrid_tls_dir, extra_args=extra)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def callgrid(callgrid_server: CallgridServer) -> CallgridServer:
    """The session's callgrid server, reset: no calls, users, numbers or subscriptions from other tests."""
    callgrid_server.reset()
    return callgrid_server


@pytest.fixture
def acs_connection_string(callgrid: CallgridServer) -> str:
    return callgrid.connection_string


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook on loopback: consents to Event Grid's and CloudEvents' handshakes, records what arrives."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def subscribe(callgrid: CallgridServer) -> Callable[..., dict[str, Any]]:
    """`subscribe(webhook.url, to=["+14255550123"], event_types=[...])`: see CallgridServer.subscribe."""
    return callgrid.subscribe


@pytest.fixture
def place_call(callgrid: CallgridServer) -> Callable[..., dict[str, Any]]:
    """`place_call(from_, to)`: a caller dials; returns the call (`serverCallId`, ...)."""
    return callgrid.place_call


@pytest.fixture
def set_device(callgrid: CallgridServer) -> Callable[..., dict[str, Any]]:
    """`set_device(raw_id, "answer" | "ring" | "decline" | "busy", answer_delay_ms=...)`."""
    return callgrid.set_device


@pytest.fixture
def clock(callgrid: CallgridServer) -> Clock:
    """The server's virtual clock: `clock.advance(seconds)`, `clock.now()`."""
    return callgrid.clock


@pytest.fixture
def faults(callgrid: CallgridServer) -> Iterator[FaultInjector]:
    """`faults.fail_deliveries(url, 503)`, `faults.time_out_deliveries(url)`, `faults.device(raw_id, "busy")`,
    `faults.fail_operation("answerCall", 500, code="8500")`; each removed after the test."""
    injector = FaultInjector(callgrid)
    yield injector
    injector.remove_all()


def _sdk_options(server: CallgridServer) -> dict[str, Any]:
    # Explicit trust, so the clients work even where aiohttp was imported before the CA was trusted.
    return {"connection_verify": server.ca_bundle}


@contextlib.contextmanager
def _sync_client(server: CallgridServer, client_class: Any) -> Iterator[Any]:
    """A sync SDK client on a transport of its own, closed after the test: a keep-alive connection left
    open would hold up the server's shutdown."""
    from azure.core.pipeline.transport import RequestsTransport

    transport = RequestsTransport(**_sdk_options(server))
    try:
        yield client_class.from_connection_string(server.connection_string, transport=transport)
    finally:
        transport.close()


@pytest.fixture
def call_automation_client(callgrid: CallgridServer) -> Iterator[Any]:
    from azure.communication.callautomation import CallAutomationClient

    with _sync_client(callgrid, CallAutomationClient) as client:
        yield client


@pytest.fixture
def identity_client(callgrid: CallgridServer) -> Iterator[Any]:
    from azure.communication.identity import CommunicationIdentityClient

    with _sync_client(callgrid, CommunicationIdentityClient) as client:
        yield client


@pytest.fixture
def phone_numbers_client(callgrid: CallgridServer) -> Iterator[Any]:
    from azure.communication.phonenumbers import PhoneNumbersClient

    with _sync_client(callgrid, PhoneNumbersClient) as client:
        yield client


# The `.aio` clients open their HTTP session on first use, in the test's event loop: use them in an
# `async with client:` block (or await client.close()) so the session is closed in that loop too.


@pytest.fixture
def call_automation_client_async(callgrid: CallgridServer) -> Any:
    from azure.communication.callautomation.aio import CallAutomationClient

    return CallAutomationClient.from_connection_string(callgrid.connection_string, **_sdk_options(callgrid))


@pytest.fixture
def identity_client_async(callgrid: CallgridServer) -> Any:
    from azure.communication.identity.aio import CommunicationIdentityClient

    return CommunicationIdentityClient.from_connection_string(callgrid.connection_string, **_sdk_options(callgrid))


@pytest.fixture
def phone_numbers_client_async(callgrid: CallgridServer) -> Any:
    from azure.communication.phonenumbers.aio import PhoneNumbersClient

    return PhoneNumbersClient.from_connection_string(callgrid.connection_string, **_sdk_options(callgrid))


# ---------------------------------------------------------------------- scenario files as tests


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIX):
        collector: pytest.Collector = ScenarioFile.from_parent(parent, path=file_path)
        return collector
    return None


class ScenarioFailed(Exception):
    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(result.report())
        self.result = result


class ScenarioFile(pytest.File):
    """A `*.scenario.yaml` file: one test, or a collection error that lists the file's problems by line."""

    def collect(self) -> Iterable[pytest.Item]:
        try:
            scenario = load(self.path)
        except ScenarioError as exc:
            raise self.CollectError("\n".join(exc.problems)) from None
        yield ScenarioItem.from_parent(
            self, name=self.path.name.removesuffix(SUFFIX), callobj=_scenario_test(scenario), scenario=scenario
        )


class ScenarioItem(pytest.Function):
    """A scenario run as a test function that takes the `callgrid` fixture (so it shares the session's
    server, reset), with a failure report that is the scenario's own: the step, its line, the diff."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"scenario: {self.scenario.name}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _scenario_test(scenario: Scenario) -> Callable[[CallgridServer], None]:
    def run(callgrid: CallgridServer) -> None:
        result = asyncio.run(run_scenario(scenario, callgrid))
        if not result.passed:
            raise ScenarioFailed(result)

    return run
