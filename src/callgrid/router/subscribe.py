"""The router's Event Grid subscriptions, through Azure Resource Manager with azure-mgmt-eventgrid.

Event Grid allows 25 filter values per subscription, so assigned numbers are packed 25 to a
subscription (`<prefix>-001`, `<prefix>-002`, ...). Packing is sticky: a number stays in the subscription
that already carries it, new numbers fill free room first, and only subscriptions whose number set
changed are written; each write makes Event Grid re-validate the endpoint, so churn is kept small.
Subscriptions under the prefix that are no longer needed are deleted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid.models import (
    AdvancedFilter,
    EventSubscription,
    EventSubscriptionFilter,
    IsNotNullAdvancedFilter,
    RetryPolicy,
    StringInAdvancedFilter,
    WebHookEventSubscriptionDestination,
)

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
NUMBER_KEY = "data.to.PhoneNumber.Value"
MAX_VALUES = 25  # Event Grid: filter values per subscription, across all advanced filters
_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Communication"
    r"/communicationServices/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


class Scope(StrEnum):
    ASSIGNED = "assigned"  # only calls to assigned numbers (filters, split by 25)
    NUMBERS = "numbers"  # every call to a phone number (the unassigned rule and the block list see them all)
    ALL = "all"  # every IncomingCall, identities' own calls included (the router leaves those ringing)


class SubscribeError(Exception):
    pass


@dataclass(frozen=True)
class Existing:
    name: str
    numbers: frozenset[str] | None  # None: not a number-list subscription
    endpoint_base_url: str | None


@dataclass
class SubscriptionPlan:
    put: dict[str, list[str] | None] = field(default_factory=dict)  # name -> numbers (None: a catch-all)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "put": {n: (len(v) if v is not None else "all") for n, v in sorted(self.put.items())},
            "delete": sorted(self.delete),
            "unchanged": sorted(self.unchanged),
        }


def plan_subscriptions(
    existing: Iterable[Existing],
    numbers: Iterable[str],
    *,
    prefix: str,
    scope: Scope,
    endpoint_base_url: str,
    force: bool = False,
) -> SubscriptionPlan:
    mine = {e.name: e for e in existing if e.name.lower().startswith(prefix.lower() + "-")}
    out = SubscriptionPlan()

    def moved(e: Existing) -> bool:
        return force or (e.endpoint_base_url or "").rstrip("/") != endpoint_base_url.rstrip("/")

    if scope is not Scope.ASSIGNED:
        name = f"{prefix}-{scope.value}"
        for other in mine:
            if other != name:
                out.delete.append(other)
        current = mine.get(name)
        if current is None or moved(current):
            out.put[name] = None
        else:
            out.unchanged.append(name)
        return out

    wanted = set(numbers)
    placed: set[str] = set()
    packs: dict[str, list[str]] = {}
    for name in sorted(mine):
        e = mine[name]
        if e.numbers is None or not _index(prefix, name):
            out.delete.append(name)
            continue
        keep = sorted((e.numbers & wanted) - placed)
        placed.update(keep)
        packs[name] = keep
    new = sorted(wanted - placed)
    for name in sorted(packs):
        room = MAX_VALUES - len(packs[name])
        if room > 0 and new:
            packs[name] += new[:room]
            new = new[room:]
    used = {_index(prefix, n) for n in packs}
    index = 1
    while new:
        while index in used:
            index += 1
        used.add(index)
        packs[f"{prefix}-{index:03d}"] = new[:MAX_VALUES]
        new = new[MAX_VALUES:]
    for name, pack in sorted(packs.items()):
        current = mine.get(name)
        if not pack:
            out.delete.append(name)
        elif current is None or current.numbers != frozenset(pack) or moved(current):
            out.put[name] = sorted(pack)
        else:
            out.unchanged.append(name)
    return out


def _index(prefix: str, name: str) -> int:
    tail = name[len(prefix) + 1 :]
    return int(tail) if tail.isascii() and tail.isdigit() else 0


class StaticToken:
    """A bearer token obtained elsewhere (`az account get-access-token`, or callgrid's CALLGRID_ARM_TOKEN)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def credential_for(token: str | None) -> Any:
    if token:
        return StaticToken(token)
    try:
        from azure.identity import DefaultAzureCredential  # optional: not a dependency of callgrid
    except ImportError:
        raise SubscribeError(
            'no ARM token: pass --arm-token (e.g. "$(az account get-access-token --query accessToken -o tsv)") '
            "or install azure-identity to use DefaultAzureCredential."
        ) from None
    return DefaultAzureCredential()


class Subscriber:
    def __init__(
        self,
        *,
        resource_id: str,
        arm_endpoint: str,
        credential: Any,
        prefix: str = "callgrid-router",
        polling_interval: float = 0.25,
        cloud_events: bool = False,
    ) -> None:
        match = _RESOURCE.match(resource_id.rstrip("/"))
        if match is None:
            raise SubscribeError(
                f"'{resource_id}' is not a Communication resource id "
                "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Communication/communicationServices/<name>)."
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{1,54}", prefix):
            raise SubscribeError("the prefix must be 2-55 letters, digits or hyphens (names add '-NNN').")
        self.resource_id = resource_id.rstrip("/")
        self._rg, self._name = match["rg"], match["name"]
        self.prefix = prefix
        self.polling_interval = polling_interval
        self.cloud_events = cloud_events
        arm = arm_endpoint.rstrip("/")
        self.client = EventGridManagementClient(
            credential, match["sub"], base_url=arm, credential_scopes=[arm + "/.default"]
        )

    def existing(self) -> list[Existing]:
        out = []
        pages = self.client.event_subscriptions.list_by_resource(
            self._rg, "Microsoft.Communication", "communicationServices", self._name
        )
        for sub in pages:
            numbers = _numbers_of(sub.filter.advanced_filters if sub.filter else None)
            base = getattr(sub.destination, "endpoint_base_url", None) if sub.destination else None
            out.append(Existing(str(sub.name), numbers, base))
        return out

    def sync(self, numbers: list[str], *, scope: Scope, webhook_url: str, force: bool = False) -> SubscriptionPlan:
        parts = urlsplit(webhook_url)
        base = f"{parts.scheme}://{parts.netloc}{parts.path}"
        plan = plan_subscriptions(
            self.existing(), numbers, prefix=self.prefix, scope=scope, endpoint_base_url=base, force=force
        )
        with ThreadPoolExecutor(max_workers=8) as pool:
            puts = [pool.submit(self._put, name, pack, scope, webhook_url) for name, pack in plan.put.items()]
            for f in puts:
                f.result()
            deletes = [pool.submit(self._delete, name) for name in plan.delete]
            for f in deletes:
                f.result()
        return plan

    def _put(self, name: str, numbers: list[str] | None, scope: Scope, webhook_url: str) -> None:
        filters: list[AdvancedFilter] = []
        if numbers is not None:
            filters.append(StringInAdvancedFilter(key=NUMBER_KEY, values=numbers))
        elif scope is Scope.NUMBERS:
            filters.append(IsNotNullAdvancedFilter(key=NUMBER_KEY))
        info = EventSubscription(
            destination=WebHookEventSubscriptionDestination(endpoint_url=webhook_url),
            filter=EventSubscriptionFilter(included_event_types=[INCOMING_CALL], advanced_filters=filters or None),
            event_delivery_schema="CloudEventSchemaV1_0" if self.cloud_events else "EventGridSchema",
            # ACS guidance: a call rings ~30 s, so retrying longer than a minute helps nobody.
            retry_policy=RetryPolicy(max_delivery_attempts=2, event_time_to_live_in_minutes=1),
        )
        poller = self.client.event_subscriptions.begin_create_or_update(
            self.resource_id, name, info, polling_interval=self.polling_interval
        )
        result = poller.result()
        if result.provisioning_state != "Succeeded":
            raise SubscribeError(f"subscription {name} ended {result.provisioning_state}.")

    def _delete(self, name: str) -> None:
        self.client.event_subscriptions.begin_delete(
            self.resource_id, name, polling_interval=self.polling_interval
        ).result()


def _numbers_of(filters: list[AdvancedFilter] | None) -> frozenset[str] | None:
    for f in filters or []:
        if isinstance(f, StringInAdvancedFilter) and (f.key or "").lower() == NUMBER_KEY.lower():
            return frozenset(f.values or [])
    return None
