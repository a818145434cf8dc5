"""The callgrid command as a user runs it, against a real server."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

from azure.communication.identity import CommunicationIdentityClient

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.support.arm import put_subscription


def _run(server: CallgridServer, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(server.data_dir), "--port", str(server.port)]
    env = {**os.environ, "COLUMNS": "250"}  # rich tables would truncate cells on an 80-column pipe
    return subprocess.run([sys.executable, "-m", "callgrid", *args, *where], capture_output=True, text=True, env=env)


def test_env_prints_export_lines_for_scripts(callgrid: CallgridServer) -> None:
    result = _run(callgrid, "env")
    assert result.returncode == 0, result.stderr
    exported = {}
    for line in result.stdout.splitlines():
        assert line.startswith("export ")
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = shlex.split(value)[0]
    assert exported["CALLGRID_CONNECTION_STRING"] == (
        f"endpoint=https://localhost:{callgrid.port};accesskey={callgrid.access_key}"
    )
    assert not exported["CALLGRID_CONNECTION_STRING"].split(";")[0].endswith("/")
    assert exported["CALLGRID_RESOURCE_ID"].endswith(
        "/providers/Microsoft.Communication/communicationServices/callgrid"
    )
    assert exported["REQUESTS_CA_BUNDLE"] == exported["SSL_CERT_FILE"]
    bundle = Path(exported["REQUESTS_CA_BUNDLE"]).read_text()
    assert bundle.count("BEGIN CERTIFICATE") > 10  # callgrid's CA plus the public roots
    assert exported["CALLGRID_ARM_TOKEN"].count(".") == 2
    assert exported["CALLGRID_CONSOLE_URL"] == f"https://localhost:{callgrid.port}/console"
    assert len(exported["CALLGRID_CONSOLE_TOKEN"]) >= 32


def test_call_shows_the_timeline(fresh: CallgridServer) -> None:
    user = CommunicationIdentityClient.from_connection_string(fresh.connection_string).create_user().properties["id"]
    fresh.client().set_endpoint(user, "answer", answer_delay_ms=0)
    result = _run(fresh, "call", "--from", "+12065550100", "--to", user, "--watch", "10")
    assert result.returncode == 0, result.stderr
    assert "callPlaced" in result.stdout and "ringing" in result.stdout and "answered" in result.stdout
    assert "state: connected" in result.stdout


def test_call_to_an_unowned_number_explains_why(fresh: CallgridServer) -> None:
    result = _run(fresh, "call", "--from", "+12065550100", "--to", "+14255550000")
    assert result.returncode == 1
    assert "not owned" in result.stderr


def test_identities_create_prints_a_raw_id(fresh: CallgridServer) -> None:
    result = _run(fresh, "identities", "create", "--answer")
    assert result.returncode == 0, result.stderr
    raw_id = result.stdout.strip()
    assert raw_id.startswith("8:acs:" + fresh.env["CALLGRID_IMMUTABLE_RESOURCE_ID"])
    assert (
        fresh.client().request("GET", "/callgrid/v1/endpoints/" + raw_id.replace(":", "%3A"))["onIncomingCall"]
        == "answer"
    )


def test_call_timeline_shows_who_got_the_incoming_call(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "timeline-app", webhook.url + "/incoming")
    fresh.client().own_number("+14255551212")
    fresh.client().set_endpoint("4:+14255551212", "answer", answer_delay_ms=0)
    result = _run(fresh, "call", "--from", "+12065550100", "--to", "+14255551212", "--watch", "10")
    assert result.returncode == 0, result.stderr
    assert "IncomingCall delivered" in result.stdout
    assert "TIMELINE-APP" in result.stdout and "answer=200" in result.stdout


def test_subscriptions_commands(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    created = _run(
        fresh,
        "subscriptions",
        "create",
        "cli-app",
        "--endpoint",
        webhook.url + "/in?k=1",
        "--to-number",
        "+14255551212",
    )
    assert created.returncode == 0, created.stderr
    assert "Succeeded" in created.stdout
    listed = _run(fresh, "subscriptions", "list")
    assert "cli-app" in listed.stdout and webhook.url + "/in" in listed.stdout
    shown = _run(fresh, "subscriptions", "show", "cli-app")
    assert '"StringIn"' in shown.stdout and "+14255551212" in shown.stdout
    refusing = WebhookReceiver(validate=False, responder=lambda item: (500, None))
    try:
        failed = _run(fresh, "subscriptions", "create", "cli-bad", "--endpoint", refusing.url)
        assert failed.returncode == 1 and "Failed" in failed.stdout
    finally:
        refusing.close()
    assert _run(fresh, "subscriptions", "delete", "cli-app").returncode == 0
    assert "cli-app" not in _run(fresh, "subscriptions", "list").stdout


def test_reset_empties_the_resource_and_health_says_the_server_is_up(callgrid: CallgridServer) -> None:
    callgrid.own_number("+14255550111")
    result = _run(callgrid, "reset")
    assert result.returncode == 0, result.stderr
    assert callgrid.client().list_numbers()["phoneNumbers"] == []
    result = _run(callgrid, "health")
    assert result.returncode == 0, result.stderr
    assert "ok: callgrid 0.1.0, clock virtual" in result.stdout


def test_health_is_unsigned_for_probes(callgrid: CallgridServer) -> None:
    context = ssl.create_default_context(cafile=callgrid.ca_bundle)
    with urllib.request.urlopen(f"{callgrid.endpoint}/callgrid/v1/health", context=context, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "ok" and body["clock"] == "virtual"


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "callgrid", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == "callgrid 0.1.0"
