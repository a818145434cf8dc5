"""The pytest plugin, as a user's project meets it: pytester runs a sample project's own test suite."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

# Where callgrid is installed with its entry point, pytest loads the plugin by itself.
PLUGIN_ARGS = (
    []
    if any(ep.value == "callgrid.testing.plugin" for ep in entry_points(group="pytest11"))
    else ["-p", "callgrid.testing.plugin"]
)

APP = '''
"""A tiny Call Automation app: consents to Event Grid's handshake, sends every IncomingCall to an agent."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier

INCOMING_CALL = "Microsoft.Communication.IncomingCall{typo}"


class RedirectApp:
    def __init__(self, connection_string, agent):
        self.automation = CallAutomationClient.from_connection_string(connection_string)
        self.agent = agent
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = app.handle(events)
                body = json.dumps(answer).encode() if answer else b""
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{{self.server.server_port}}/api/events"

    def handle(self, events):
        for event in events:
            if event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent":
                return {{"validationResponse": event["data"]["validationCode"]}}
            if event["eventType"] == INCOMING_CALL:
                context = event["data"]["incomingCallContext"]
                self.automation.redirect_call(context, CommunicationUserIdentifier(self.agent))
        return None

    def close(self):
        self.server.shutdown()
'''

TESTS = """
import pytest

from app import RedirectApp

SUPPORT_LINE = "+14255550100"
CUSTOMER = "+12065550123"


@pytest.fixture
def app(acs_connection_string, identity_client, set_device, subscribe):
    agent = identity_client.create_user().properties["id"]
    set_device(agent, "answer")
    app = RedirectApp(acs_connection_string, agent)
    subscribe(app.url, to=[SUPPORT_LINE])
    yield app
    app.close()


def test_a_call_to_the_support_line_reaches_the_agent(app, callgrid, place_call, webhook, subscribe):
    subscribe(webhook.url)  # every IncomingCall, to watch where the call goes
    call = place_call(CUSTOMER, SUPPORT_LINE)
    offer = webhook.wait_for(
        "Microsoft.Communication.IncomingCall",
        lambda e: e["data"]["to"]["rawId"] == app.agent,
        timeout=5,
    )
    assert offer["data"]["from"]["phoneNumber"]["value"] == CUSTOMER
    connected = webhook.wait_until(lambda: callgrid.get_call(call["serverCallId"])["state"] == "connected")
    assert connected


def test_an_unanswered_offer_rings_out_on_the_virtual_clock(callgrid, place_call, webhook, subscribe, clock):
    subscribe(webhook.url, event_types=["Microsoft.Communication.IncomingCall"])
    call = place_call(CUSTOMER, SUPPORT_LINE)  # nobody answers: no app in this test
    webhook.wait_for("Microsoft.Communication.IncomingCall")
    clock.advance(3600)
    assert callgrid.get_call(call["serverCallId"])["state"] == "disconnected"
"""


def _project(pytester: pytest.Pytester, *, broken: bool) -> None:
    pytester.makepyfile(app=APP.format(typo="s" if broken else ""), test_support_line=TESTS)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A process of its own, as a user's test run is (in-process runs share the SDKs' imported modules).
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *args)


def test_a_users_project_passes_with_the_plugin(pytester: pytest.Pytester) -> None:
    _project(pytester, broken=False)
    result = _run(pytester)
    result.assert_outcomes(passed=2)


def test_an_app_imported_by_a_conftest_trusts_the_server_with_its_own_async_clients(
    pytester: pytest.Pytester,
) -> None:
    """aiohttp keeps the trust it finds when imported: a conftest that imports the app (and so aiohttp)
    runs before pytest_configure, so the session's CA must be trusted before conftests are imported."""
    pytester.makeconftest(
        "import aiohttp.connector  # as an app's own module would, at import\n"
        "from azure.communication.identity.aio import CommunicationIdentityClient\n"
    )
    pytester.makepyfile(
        test_app="""
import asyncio

from conftest import CommunicationIdentityClient


def test_the_apps_own_async_client(acs_connection_string):
    async def main():
        async with CommunicationIdentityClient.from_connection_string(acs_connection_string) as client:
            return await client.create_user()

    assert asyncio.run(main()).properties["id"].startswith("8:acs:")
"""
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1)


def test_a_broken_app_fails_with_a_message_that_says_what_did_not_arrive(pytester: pytest.Pytester) -> None:
    _project(pytester, broken=True)
    result = _run(pytester, "-k", "reaches_the_agent")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: no Microsoft.Communication.IncomingCall event matching the predicate reached "
            "http://127.0.0.1:* within 5 s; it received: [[]'Microsoft.Communication.IncomingCall'[]]"
        ]
    )


def test_the_plugin_lists_its_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = _run(pytester, "--fixtures")
    for name in ("callgrid", "acs_connection_string", "webhook", "subscribe", "place_call", "set_device", "clock"):
        result.stdout.fnmatch_lines([f"{name} -- *"])


SCOPED = """
async def test_{name}(callgrid, identity_client_async, phone_numbers_client):
    async with identity_client_async as identity:
        user = await identity.create_user()
    assert user.properties["id"].startswith("8:acs:")
    assert list(phone_numbers_client.list_purchased_phone_numbers()) == []
    print("PORT=%d" % callgrid.port)
"""


def test_a_server_per_module_with_the_ini_option_and_the_async_clients(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=SCOPED.format(name="one"), test_two=SCOPED.format(name="two"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\ncallgrid_scope = module\n"
    )
    result = _run(pytester, "-s")
    result.assert_outcomes(passed=2)
    ports = {m.group(1) for line in result.outlines if (m := re.search(r"PORT=(\d+)", line))}
    assert len(ports) == 2, result.outlines


GOOD_SCENARIO = """\
name: A customer calls the support line and the app answers
given:
  numbers: ["+14255550100"]
steps:
  - call: "+14255550100"
    from: "+12065550123"
  - expect: IncomingCall
    where:
      to.phoneNumber.value: "+14255550100"
  - answer:
  - expect: CallConnected
"""


def test_scenario_files_are_collected_as_tests_and_fail_with_a_diff(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.yaml", support_line=GOOD_SCENARIO)
    pytester.makefile(
        ".scenario.yaml",
        wrong_line=GOOD_SCENARIO.replace('value: "+14255550100"', 'value: "+14255550199"\n    within: 1s'),
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = _run(pytester, "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "support_line.scenario.yaml::support_line PASSED*",
            "wrong_line.scenario.yaml::wrong_line FAILED*",
            "*_ scenario: A customer calls the support line and the app answers _*",
            "step 2 (*wrong_line.scenario.yaml:7): expect IncomingCall where to.phoneNumber.value = '+14255550199' "
            "within 1s",
            "  no IncomingCall matching arrived within 1 s; the closest of 1 seen (- expected, + seen):",
            '  - to.phoneNumber.value: "+14255550199"',
            '  + to.phoneNumber.value: "+14255550100"',
        ]
    )


def test_a_malformed_scenario_file_is_a_collection_error_at_its_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.yaml", broken="name: broken\nsteps:\n  - answr:\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*broken.scenario.yaml:3: unknown action `answr` (did you mean `answer`?)*"])
