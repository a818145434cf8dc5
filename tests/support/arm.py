"""Event subscriptions through ARM's own paths, the way a script or the Azure CLI would make them."""

from __future__ import annotations

from typing import Any

from callgrid.testing import INCOMING_CALL, CallgridServer

API = "api-version=2025-02-15"


def subscription_url(server: CallgridServer, name: str) -> str:
    return server.endpoint + server.subscription_path(name)


def arm_headers(server: CallgridServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.arm_token}"}


def put_subscription(
    server: CallgridServer,
    name: str,
    endpoint_url: str,
    *,
    included_event_types: list[str] | None = None,
    properties: dict[str, Any] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """The plugin's subscribe, returning the subscription however its handshake ended (Failed too)."""
    types = included_event_types or [INCOMING_CALL]
    body = server.subscribe(endpoint_url, name=name, event_types=types, properties=properties, wait=False)
    return server.wait_provisioned(name) if wait else body


def wait_provisioned(server: CallgridServer, name: str, timeout: float = 15.0) -> dict[str, Any]:
    return server.wait_provisioned(name, timeout)
