"""Dead-lettering (eventgrid.md 4.6): what Azure writes, where, and callgrid's replay of it.

A delivery that ends undelivered becomes a dead letter when its subscription has a
`deadLetterDestination`, and is dropped (and counted) otherwise, as in Azure. Dead letters are
recorded in the store in the same transaction as the outcome; a writer loop then puts them in
blobs laid out as Azure lays them out:

    <container>/<EVENT-SUBSCRIPTION-NAME>/<yyyy>/<M>/<d>/<H>/<guid>.json   (a JSON array)

The container is `blobContainerName` in the Azure Storage account of a connection string setting
(Azurite works), or, without one, a folder: `<data dir>/deadletters/<account>/<container>/...`,
where <account> is the last segment of the destination's `resourceId` (the storage account name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from callgrid import jsonio
from callgrid.clock import Clock, iso7, to_datetime
from callgrid.errors import Conflict, NotFound
from callgrid.eventgrid.delivery.payload import CLOUD_EVENT_SCHEMA
from callgrid.store import DeadLetterRow, DeliveryRow, Store, StoreTx

log = logging.getLogger(__name__)

MAX_DELIVERY_ATTEMPTS_EXCEEDED = "MaxDeliveryAttemptsExceeded"
# An event given up during its endpoint's probation, without an attempt (observed reason and outcome,
# eventgrid.md 4.5, 4.6). Used whatever outcome put the endpoint on probation: no other reason was seen.
PROBATION_REASON = "UndeliverableDueToProbationCausedByClientError"
PROBATION_OUTCOME = "Probation"
# A dead-letter store unreachable this long drops the event (eventgrid.md 4.6).
GIVE_UP_AFTER_SECONDS = 4 * 3600.0
RETRY_WRITE_SECONDS = 60.0


def undeliverable_reason(outcome: str) -> str:
    """Reason for a response that is never retried: observed as UndeliverableDueToHttpBadRequest for 400."""
    return "UndeliverableDueToHttp" + outcome


def dead_letter_item(
    delivered: dict[str, Any], schema: str, row: DeliveryRow, reason: str, fallback_outcome: str
) -> dict[str, Any]:
    """The blob element: the event as delivered plus Azure's dead-letter fields (camelCase, or CE lower-case)."""
    fields: dict[str, Any] = {
        "deadLetterReason": reason,
        "deliveryAttempts": row.attempts,
        "lastDeliveryOutcome": row.last_outcome or fallback_outcome,
        "lastHttpStatusCode": row.last_status if row.last_status is not None else 0,
        "publishTime": iso7(row.created_at),
        "lastDeliveryAttemptTime": iso7(row.last_attempt_at) if row.last_attempt_at is not None else None,
    }
    if schema == CLOUD_EVENT_SCHEMA:
        fields = {k.lower(): v for k, v in fields.items()}
    return {**delivered, **fields}


def blob_name(subscription_name: str, at: float, name: str | None = None) -> str:
    """<SUBSCRIPTION>/<yyyy>/<M>/<d>/<H>/<guid>.json, date parts not zero-padded, UTC."""
    t = to_datetime(at)
    return f"{subscription_name.upper()}/{t.year}/{t.month}/{t.day}/{t.hour}/{name or uuid.uuid4()}.json"


# A storage account's ARM id; account names are 3-24 lower-case letters and digits (ARM ids are
# case-insensitive, so the name is lower-cased, not refused, when it comes in capitals).
_STORAGE_ACCOUNT_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[A-Za-z0-9_().-]{0,89}[A-Za-z0-9_()-]"
    r"/providers/Microsoft\.Storage/storageAccounts/(?P<account>[a-z0-9]{3,24})\Z",
    re.IGNORECASE,
)
# Azure's container names: 3-63 lower-case letters, digits and single hyphens, starting and ending with
# a letter or digit.
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")


class InvalidDeadLetterDestination(ValueError):
    """A destination whose account or container is not a valid Azure Storage name."""


def storage_account(resource_id: str) -> str | None:
    """The storage account named by an ARM id, or None if `resource_id` is not a storage account's id."""
    match = _STORAGE_ACCOUNT_ID.match(resource_id)
    return None if match is None else match["account"].lower()


def is_container_name(name: str) -> bool:
    return _CONTAINER.match(name) is not None


def destination_parts(destination: dict[str, Any]) -> tuple[str, str]:
    """(storage account, container) of a `deadLetterDestination`; checked again here, as subscriptions stored
    before these rules existed may hold anything."""
    props = destination.get("properties") or {}
    account = storage_account(str(props.get("resourceId") or ""))
    container = str(props.get("blobContainerName") or "")
    if account is None or not is_container_name(container):
        raise InvalidDeadLetterDestination(
            f"the dead-letter destination {props.get('resourceId')!r} / {container!r} is not a storage account "
            "id and container name"
        )
    return account, container


class BlobWriter(Protocol):
    async def write(self, account: str, container: str, name: str, data: bytes) -> str:
        """Write one blob; returns where it went (a path or URL)."""
        ...

    async def close(self) -> None: ...


class FolderWriter:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def write(self, account: str, container: str, name: str, data: bytes) -> str:
        # Names are validated before they get here; resolving and checking keeps every write under the root
        # whatever a future caller passes.
        root = self.root.resolve()
        path = (root / account / container / name).resolve()
        if not path.is_relative_to(root):
            raise InvalidDeadLetterDestination(f"{account}/{container}/{name} would be written outside {root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half a blob.
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        return str(path)

    async def close(self) -> None:
        pass


class AzureBlobWriter:
    """Blobs in the Azure Storage account of a connection string (azure-storage-blob; Azurite works)."""

    def __init__(self, connection_string: str) -> None:
        self._connection_string = connection_string
        self._service: Any = None

    async def write(self, account: str, container: str, name: str, data: bytes) -> str:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        if self._service is None:
            self._service = BlobServiceClient.from_connection_string(self._connection_string)
        client = self._service.get_container_client(container)
        # Azure drops dead letters whose container is missing; a local emulator creates it instead.
        with contextlib.suppress(ResourceExistsError):
            await client.create_container()
        blob = client.get_blob_client(name)
        await blob.upload_blob(data, overwrite=True, content_settings=None)
        return str(blob.url)

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()


def writer_for(connection_string: str, data_dir: Path) -> BlobWriter:
    if connection_string:
        return AzureBlobWriter(connection_string)
    return FolderWriter(data_dir / "deadletters")


class DeadLetterWriter:
    """Writes recorded dead letters once due, grouped per subscription and hour into one blob each."""

    def __init__(self, store: Store, clock: Clock, writer: BlobWriter, batch: int = 500) -> None:
        self._store = store
        self._clock = clock
        self._writer = writer
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    wrote = await self.write_due()
                except Exception:
                    log.exception("dead-letter writer error")
                    wrote = 0
                if wrote:
                    continue
                async with self._store.transaction() as tx:
                    next_due = await tx.next_dead_letter_write_due()
                now = self._clock.now()
                deadline = now + 3600 if next_due is None else max(next_due, now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._clock.sleep_until(deadline, self._wake), 1.0)
        finally:
            await self._writer.close()

    async def write_due(self) -> int:
        now = self._clock.now()
        async with self._store.transaction() as tx:
            due = await tx.due_dead_letter_writes(now, self._batch)
        if not due:
            return 0
        groups: dict[tuple[str, str, str], list[DeadLetterRow]] = defaultdict(list)
        for row in due:
            try:
                account, container = destination_parts(row.destination)
            except InvalidDeadLetterDestination as exc:  # no retry can help
                row.write_status, row.write_error = "failed", str(exc)
                continue
            groups[(account, container, blob_name(row.subscription_name, row.created_at, "-"))].append(row)
        for (account, container, _), rows in groups.items():
            name = blob_name(rows[0].subscription_name, rows[0].created_at)
            data = jsonio.dumpb([r.item for r in rows])
            try:
                location = await self._writer.write(account, container, name, data)
            except Exception as exc:  # the store keeps them; try again later, give up after 4 h as Azure does
                log.warning("dead-letter write to %s/%s failed: %s", account, container, exc)
                for r in rows:
                    r.write_error = f"{type(exc).__name__}: {exc}"
                    if now - r.created_at >= GIVE_UP_AFTER_SECONDS:
                        r.write_status = "failed"
                    else:
                        r.write_due_at = now + RETRY_WRITE_SECONDS
                continue
            for r in rows:
                r.write_status, r.location, r.write_error = "written", location, None
        async with self._store.transaction() as tx:
            await tx.update_dead_letters(due)
        return len(due)


@dataclass
class Replayed:
    dead_letter: DeadLetterRow
    delivery: DeliveryRow


async def replay(tx: StoreTx, dead_letter_id: str, now: float) -> Replayed:
    """Queue a dead-lettered event again to its subscription, as a new delivery with a fresh policy."""
    dead = await tx.get_dead_letter(dead_letter_id)
    if dead is None:
        raise NotFound(f"Dead letter '{dead_letter_id}' was not found.", code="DeadLetterNotFound")
    sub = await tx.get_subscription(dead.subscription_id)
    if sub is None:
        raise Conflict(
            f"The event subscription '{dead.subscription_name}' no longer exists; the event cannot be replayed.",
            code="SubscriptionNotFound",
        )
    props = sub["properties"]
    retry = props.get("retryPolicy") or {}
    row = DeliveryRow(
        id=str(uuid.uuid4()),
        kind="eventgrid",
        event_id=dead.event_id,
        url=props["destination"]["properties"]["endpointUrl"],
        subscription_id=dead.subscription_id,
        created_at=now,
        next_attempt_at=now,
        max_attempts=int(retry.get("maxDeliveryAttempts", 30)),
        expires_at=now + 60 * int(retry.get("eventTimeToLiveInMinutes", 1440)),
    )
    await tx.add_delivery(row)
    dead.replayed_at = now
    dead.replay_delivery_id = row.id
    await tx.update_dead_letters([dead])
    return Replayed(dead, row)
