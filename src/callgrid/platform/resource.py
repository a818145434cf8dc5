"""The one Communication resource a callgrid server plays."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from callgrid.security import new_access_key
from callgrid.store import StoreTx


@dataclass(frozen=True)
class CommunicationResource:
    name: str
    immutable_id: str  # GUID: inside 8:acs:<id>_<guid> user ids, and the callback JWT audience
    access_key: str
    subscription_id: str
    resource_group: str

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Communication/communicationServices/{self.name}"
        )

    @property
    def topic(self) -> str:
        # Event Grid stamps system events with the source's ARM id in lower case (acs-wire.md 4.1).
        return self.arm_id.lower()

    def connection_string(self, endpoint: str) -> str:
        return f"endpoint={endpoint};accesskey={self.access_key}"


async def load_or_create_resource(
    tx: StoreTx, *, name: str, subscription_id: str, resource_group: str
) -> CommunicationResource:
    """The resource's id and key are made once and kept: a restart keeps the same connection string."""
    # Nodes starting together on a shared store make them once, not once each.
    await tx.lock("callgrid.resource")
    immutable_id = await tx.get_meta("resource.immutableId")
    access_key = await tx.get_meta("resource.accessKey")
    if immutable_id is None or access_key is None:
        immutable_id = str(uuid.uuid4())
        access_key = new_access_key()
        await tx.set_meta("resource.immutableId", immutable_id)
        await tx.set_meta("resource.accessKey", access_key)
    return CommunicationResource(
        name=name,
        immutable_id=immutable_id,
        access_key=access_key,
        subscription_id=subscription_id,
        resource_group=resource_group,
    )
