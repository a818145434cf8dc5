"""`callgrid resources` and `callgrid env --resource` as a user runs them, against a real server."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from azure.communication.identity import CommunicationIdentityClient

from callgrid.testing import CallgridServer


def _run(server: CallgridServer, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(server.data_dir), "--port", str(server.port)]
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "callgrid", *args, *where], capture_output=True, text=True, env=env)


def _exports(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = shlex.split(value)[0] if value else ""
    return found


def test_resources_create_list_show_env_delete(callgrid: CallgridServer) -> None:
    created = _run(callgrid, "resources", "create", "team-b", "--resource-group", "rg-b", "--json")
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert doc["name"] == "team-b" and doc["resourceGroup"] == "rg-b"
    assert doc["primaryConnectionString"] == f"endpoint={callgrid.endpoint};accesskey={doc['primaryKey']}"

    listed = _run(callgrid, "resources", "list")
    assert listed.returncode == 0, listed.stderr
    assert "callgrid" in listed.stdout and "team-b" in listed.stdout and "rg-b" in listed.stdout

    shown = _run(callgrid, "resources", "show", "team-b")
    assert shown.returncode == 0 and doc["primaryConnectionString"] in shown.stdout

    # `env --resource` prints the resource's own variables; the SDK works with them as they are.
    env = _exports(_run(callgrid, "env", "--resource", "team-b").stdout)
    assert env["CALLGRID_CONNECTION_STRING"] == doc["primaryConnectionString"]
    assert env["CALLGRID_RESOURCE_ID"] == doc["id"] and "/resourceGroups/rg-b/" in doc["id"]
    assert env["CALLGRID_IMMUTABLE_RESOURCE_ID"] == doc["immutableResourceId"]
    assert env["CALLGRID_ARM_TOKEN"] != callgrid.arm_token
    identity = CommunicationIdentityClient.from_connection_string(
        env["CALLGRID_CONNECTION_STRING"], connection_verify=callgrid.ca_bundle
    )
    assert identity.create_user().properties["id"].startswith(f"8:acs:{doc['immutableResourceId']}_")
    # Without --resource, env is the default resource's, as it always was.
    assert _exports(_run(callgrid, "env").stdout)["CALLGRID_CONNECTION_STRING"] == callgrid.connection_string

    rotated = _run(callgrid, "resources", "regenerate-key", "team-b", "--key", "secondary", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["secondaryKey"] != doc["secondaryKey"]

    deleted = _run(callgrid, "resources", "delete", "team-b")
    assert deleted.returncode == 0 and "deleted team-b" in deleted.stdout
    unknown = _run(callgrid, "env", "--resource", "team-b")
    assert unknown.returncode == 1 and "no Communication resource named 'team-b'" in unknown.stderr
    again = _run(callgrid, "resources", "delete", "team-b")
    assert again.returncode == 1 and "ResourceNotFound" in again.stderr
