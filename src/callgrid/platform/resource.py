"""The Communication resources a callgrid server plays: the default one, and any made since.

Each resource is what an Azure Communication Services resource is: a name, an immutable id (inside
`8:acs:<id>_<guid>` user ids, the `res` of call contexts, the callback JWT audience), two access keys and
an ARM id. All share the server's one endpoint: a request names its resource by the key it is signed with
(no two resources share a key), an ARM request by the resource's path. What belongs to a resource
(identities, numbers, calls, its system topic and subscriptions) is unknown to every other one.

The default resource lives in `meta` as it always has, so existing connection strings keep working; the
others are rows of their own. The directory is held in memory (resources are few and change rarely) and
follows the store: a change is applied once its transaction has committed. Several nodes may share the
store: every change also writes a new `resources.version` to `meta`, so a node can tell with one read
whether what it holds is still what the store holds (`moved`) and read it again (`reload`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from callgrid.errors import Conflict, InvalidRequest, NotFound
from callgrid.security import new_access_key
from callgrid.security.tokens import ARM_SUBJECT
from callgrid.store import Store, StoreTx

# Azure's rule for a Communication resource name (it becomes a DNS label): 1-63 letters, digits, hyphens.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._()-]{1,90}$")
KEY_TYPES = ("primary", "secondary")
# Moves (a new random value) with every change of the resources other than the default one.
VERSION_KEY = "resources.version"


@dataclass(frozen=True)
class CommunicationResource:
    name: str
    immutable_id: str  # GUID: inside 8:acs:<id>_<guid> user ids, and the callback JWT audience
    access_key: str  # the primary key: the one connection strings carry
    subscription_id: str
    resource_group: str
    secondary_key: str = ""
    created_at: float = 0.0
    is_default: bool = False

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

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys a request may be signed with: either one works, as on Azure (so keys can be rolled)."""
        return tuple(k for k in (self.access_key, self.secondary_key) if k)

    @property
    def user_prefix(self) -> str:
        """Every identity of this resource, and only those, starts with this."""
        return f"8:acs:{self.immutable_id}_"

    def owns_user(self, raw_id: str) -> bool:
        return raw_id.startswith(self.user_prefix)

    @property
    def arm_subject(self) -> str:
        """The principal of this resource's ARM tokens: it may manage this resource's Event Grid parts only."""
        return ARM_SUBJECT if self.is_default else f"{ARM_SUBJECT}/communicationServices/{self.immutable_id}"

    def connection_string(self, endpoint: str, *, key: str | None = None) -> str:
        return f"endpoint={endpoint};accesskey={key or self.access_key}"

    def view(self, endpoint: str, *, with_keys: bool = False) -> dict[str, Any]:
        """The resource as `/callgrid/v1/resources` shows it; keys only when asked (like ARM's listKeys)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "id": self.arm_id,
            "immutableResourceId": self.immutable_id,
            "endpoint": endpoint,
            "subscriptionId": self.subscription_id,
            "resourceGroup": self.resource_group,
            "isDefault": self.is_default,
        }
        if with_keys:
            doc.update(
                primaryKey=self.access_key,
                secondaryKey=self.secondary_key,
                primaryConnectionString=self.connection_string(endpoint),
                secondaryConnectionString=self.connection_string(endpoint, key=self.secondary_key),
            )
        return doc

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "immutableId": self.immutable_id,
            "primaryKey": self.access_key,
            "secondaryKey": self.secondary_key,
            "subscriptionId": self.subscription_id,
            "resourceGroup": self.resource_group,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CommunicationResource:
        return cls(
            name=doc["name"],
            immutable_id=doc["immutableId"],
            access_key=doc["primaryKey"],
            secondary_key=doc["secondaryKey"],
            subscription_id=doc["subscriptionId"],
            resource_group=doc["resourceGroup"],
            created_at=float(doc.get("createdAt", 0.0)),
        )


async def load_or_create_resource(
    tx: StoreTx, *, name: str, subscription_id: str, resource_group: str
) -> CommunicationResource:
    """The default resource's id and keys are made once and kept: a restart keeps the same connection string."""
    # Nodes starting together on a shared store make them once, not once each.
    await tx.lock("callgrid.resource")
    immutable_id = await tx.get_meta("resource.immutableId")
    access_key = await tx.get_meta("resource.accessKey")
    if immutable_id is None or access_key is None:
        immutable_id = str(uuid.uuid4())
        access_key = new_access_key()
        await tx.set_meta("resource.immutableId", immutable_id)
        await tx.set_meta("resource.accessKey", access_key)
    secondary_key = await tx.get_meta("resource.secondaryKey")
    if secondary_key is None:
        # Older data dirs had one key: the second one is made the first time it is wanted.
        secondary_key = new_access_key()
        await tx.set_meta("resource.secondaryKey", secondary_key)
    return CommunicationResource(
        name=name,
        immutable_id=immutable_id,
        access_key=access_key,
        secondary_key=secondary_key,
        subscription_id=subscription_id,
        resource_group=resource_group,
        is_default=True,
    )


async def load_resources(tx: StoreTx) -> list[CommunicationResource]:
    """The resources made with `callgrid resources create`, oldest first (not the default one)."""
    return [CommunicationResource.from_doc(d) for d in await tx.list_resources()]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"'{name}' is not a valid Communication resource name: 1 to 63 letters, digits and hyphens, "
            "starting and ending with a letter or digit.",
            code="InvalidResourceName",
        )
    return name


def _check_segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise InvalidRequest(
            f"'{value}' is not a valid {what}: 1 to 90 letters, digits, '.', '_', '-', '(' or ')'.",
            code="InvalidRequestContent",
        )
    return value


class ResourceDirectory:
    """Every resource of this server, found by name, immutable id, ARM id or key."""

    def __init__(self, default: CommunicationResource, others: list[CommunicationResource] | None = None) -> None:
        self.default = default
        self._others: dict[str, CommunicationResource] = {}
        for resource in others or []:
            self._others[resource.name.lower()] = resource
        self.version: str | None = None  # the store's VERSION_KEY when the directory was last read

    async def reload(self, tx: StoreTx) -> None:
        """Read the resources again from the store (another node may have changed them)."""
        version = await tx.get_meta(VERSION_KEY)
        others = await load_resources(tx)
        self._others = {r.name.lower(): r for r in others}
        self.version = version

    async def moved(self, store: Store) -> bool:
        """Whether the resources changed in the store since this directory was read (one small read)."""
        return await store.peek_meta(VERSION_KEY) != self.version

    async def _current(self, tx: StoreTx) -> None:
        # A change starts from the store's state, one at a time across nodes: another node's change (a
        # name taken, a key regenerated) is neither missed nor overwritten.
        await tx.lock("callgrid.resource")
        await self.reload(tx)

    async def _changed(self, tx: StoreTx, apply: Callable[[], None]) -> None:
        version = str(uuid.uuid4())
        await tx.set_meta(VERSION_KEY, version)

        def applied() -> None:
            apply()
            self.version = version

        tx.after_commit(applied)

    def all(self) -> list[CommunicationResource]:
        return [self.default, *self._others.values()]

    def __iter__(self) -> Iterator[CommunicationResource]:
        return iter(self.all())

    def find(self, name: str) -> CommunicationResource | None:
        if name.lower() == self.default.name.lower():
            return self.default
        return self._others.get(name.lower())

    def get(self, name: str) -> CommunicationResource:
        found = self.find(name)
        if found is None:
            raise NotFound(f"No Communication resource named '{name}' on this server.", code="ResourceNotFound")
        return found

    def by_immutable_id(self, immutable_id: str) -> CommunicationResource | None:
        return next((r for r in self.all() if r.immutable_id == immutable_id), None)

    def by_arm_id(self, arm_id: str) -> CommunicationResource | None:
        wanted = arm_id.rstrip("/").lower()
        return next((r for r in self.all() if r.arm_id.lower() == wanted), None)

    def owner_of_user(self, raw_id: str) -> CommunicationResource | None:
        return next((r for r in self.all() if r.owns_user(raw_id)), None)

    def deleted(self, immutable_id: str) -> CommunicationResource:
        """A stand-in for a deleted resource: what still refers to it (a call running out) reaches nobody."""
        return CommunicationResource(
            name=f"deleted-{immutable_id}",
            immutable_id=immutable_id,
            access_key="",
            subscription_id=self.default.subscription_id,
            resource_group=self.default.resource_group,
        )

    def by_arm_subject(self, subject: str) -> CommunicationResource | None:
        return next((r for r in self.all() if r.arm_subject == subject), None)

    def candidates(self) -> list[tuple[CommunicationResource, str]]:
        """(resource, key) pairs a signature may be checked against, the default resource's first."""
        return [(r, key) for r in self.all() for key in r.keys]

    async def create(
        self,
        tx: StoreTx,
        name: str,
        *,
        now: float,
        subscription_id: str | None = None,
        resource_group: str | None = None,
    ) -> CommunicationResource:
        check_name(name)
        await self._current(tx)
        if self.find(name) is not None:
            raise Conflict(f"A Communication resource named '{name}' already exists.", code="ResourceExists")
        resource = CommunicationResource(
            name=name,
            immutable_id=str(uuid.uuid4()),
            access_key=new_access_key(),
            secondary_key=new_access_key(),
            subscription_id=_check_segment(subscription_id or self.default.subscription_id, "subscription id"),
            resource_group=_check_segment(resource_group or self.default.resource_group, "resource group"),
            created_at=now,
        )
        await tx.put_resource(resource.name, resource.immutable_id, now, resource.to_doc())
        await self._changed(tx, lambda: self._others.__setitem__(name.lower(), resource))
        return resource

    async def delete(self, tx: StoreTx, name: str) -> CommunicationResource:
        """Forget the resource, its identities and its numbers (the caller removes its Event Grid parts)."""
        await self._current(tx)
        resource = self.get(name)
        if resource.is_default:
            raise InvalidRequest(
                f"'{name}' is this server's default resource; it cannot be deleted (use `callgrid reset`).",
                code="DefaultResource",
            )
        await tx.delete_identities_with_prefix(resource.user_prefix)
        await tx.delete_phone_numbers_of(resource.immutable_id)
        await tx.delete_resource(resource.name)
        await self._changed(tx, lambda: self._forget(name))
        return resource

    async def regenerate_key(self, tx: StoreTx, name: str, key_type: str) -> CommunicationResource:
        """A new primary or secondary key; the old one stops working at once, as on Azure."""
        await self._current(tx)
        resource = self.get(name)
        if resource.is_default:
            # Its key is in every `callgrid env` a user has exported: it stays what it is.
            raise InvalidRequest(
                f"'{name}' is this server's default resource; its keys do not change.", code="DefaultResource"
            )
        if key_type not in KEY_TYPES:
            raise InvalidRequest("keyType must be 'primary' or 'secondary'.", code="InvalidKeyType")
        new_key = new_access_key()
        if key_type == "primary":
            changed = replace(resource, access_key=new_key)
        else:
            changed = replace(resource, secondary_key=new_key)
        await tx.put_resource(changed.name, changed.immutable_id, changed.created_at, changed.to_doc())
        await self._changed(tx, lambda: self._others.__setitem__(name.lower(), changed))
        return changed

    def _forget(self, name: str) -> None:
        self._others.pop(name.lower(), None)

    async def forget_created(self, tx: StoreTx) -> None:
        """In a reset's transaction (which empties the store's resources): only the default one is left."""
        await self._changed(tx, lambda: self._others.clear())
