"""Event subscriptions through ARM's own paths, the way a script or the Azure CLI would make them."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.support.server import CallgridProcess

API = "api-version=2025-02-15"


def subscription_url(server: CallgridProcess, name: str) -> str:
    return f"{server.endpoint}{server.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}?{API}"


def arm_headers(server: CallgridProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.arm_token}"}


def put_subscription(
    server: CallgridProcess,
    name: str,
    endpoint_url: str,
    *,
    included_event_types: list[str] | None = None,
    properties: dict[str, Any] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint_url}},
        "filter": {"includedEventTypes": included_event_types or ["Microsoft.Communication.IncomingCall"]},
    }
    props.update(properties or {})
    response = requests.put(subscription_url(server, name), json={"properties": props}, headers=arm_headers(server))
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return wait_provisioned(server, name) if wait else body


def wait_provisioned(server: CallgridProcess, name: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = requests.get(subscription_url(server, name), headers=arm_headers(server)).json()
        if body["properties"]["provisioningState"] not in ("Creating", "Updating"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"subscription {name} still {body['properties']['provisioningState']}")
        time.sleep(0.05)
