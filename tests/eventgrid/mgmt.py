"""azure-mgmt-eventgrid pointed at a callgrid process, and custom topics made through it."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid.models import Topic

from callgrid.testing import CallgridServer

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"  # free-form for topics, as in Azure
GROUP = "my-topics-rg"


class ArmToken:
    """A TokenCredential whose token is the ARM bearer token callgrid issues."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def mgmt(server: CallgridServer, subscription_id: str | None = None) -> EventGridManagementClient:
    return EventGridManagementClient(
        ArmToken(server.arm_token),  # type: ignore[arg-type]
        subscription_id or server.resource_id.split("/")[2],
        base_url=server.endpoint,
        connection_verify=server.ca_bundle,
        polling_interval=0.05,
    )


def resource_group(server: CallgridServer) -> str:
    return server.resource_id.split("/")[4]


def create_topic(server: CallgridServer, name: str, input_schema: str = "EventGridSchema") -> Any:
    """The Topic model, typed loosely: its read-only properties are Optional in the SDK's stubs."""
    client = mgmt(server, SUBSCRIPTION)
    topic: Topic = client.topics.begin_create_or_update(
        GROUP, name, Topic(location="westus", input_schema=input_schema)
    ).result()
    return topic


def topic_key(server: CallgridServer, name: str) -> str:
    key = mgmt(server, SUBSCRIPTION).topics.list_shared_access_keys(GROUP, name).key1
    assert key is not None
    return key
