"""Event Grid ARM calls over plain HTTP (requests), for tests that need many subscriptions quickly."""

from __future__ import annotations

import time
from typing import Any

import requests

from callgrid.testing import CallgridServer
from tests.eventgrid.mgmt import GROUP, SUBSCRIPTION

API = "api-version=2025-02-15"


def headers(server: CallgridServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.arm_token}"}


def topic_id(name: str, subscription: str = SUBSCRIPTION, group: str = GROUP) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.EventGrid/topics/{name}"


def topic_subscription_url(server: CallgridServer, topic: str, name: str) -> str:
    """`topic` is a name (in the default subscription and group) or a full topic id."""
    full = topic if topic.startswith("/") else topic_id(topic)
    return f"{server.endpoint}{full}/eventSubscriptions/{name}?{API}"


def extension_url(server: CallgridServer, name: str) -> str:
    return f"{server.endpoint}{server.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}?{API}"


def put(server: CallgridServer, url: str, properties: dict[str, Any]) -> requests.Response:
    return requests.put(url, json={"properties": properties}, headers=headers(server))


def webhook_properties(url: str, **extra: Any) -> dict[str, Any]:
    return {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": url}}, **extra}


def wait_state(server: CallgridServer, url: str, timeout: float = 15.0) -> dict[str, Any]:
    """The subscription once its handshake has ended (any state but Creating/Updating)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = requests.get(url, headers=headers(server)).json()
        if body["properties"]["provisioningState"] not in ("Creating", "Updating"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"still {body['properties']['provisioningState']}: {url}")
        time.sleep(0.02)
