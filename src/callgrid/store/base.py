"""The store interface: every read and write of callgrid state goes through a `StoreTx`.

A domain operation opens one transaction, reads what it needs, writes the state change *and* the
events it raised (outbox rows) together, and commits before the caller is answered: nothing that
was acknowledged can be lost, and nothing is half-written. Implementations: `sqlite.py` (the default,
one node) and `postgresql.py` (several nodes on one database); `callgrid.store.open_store` picks one by URL.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class DuplicateKey(Exception):
    """An insert hit an existing key."""


class StoreUnusable(Exception):
    """The store cannot be opened or is damaged; the message names it and says what to do."""


class StoreUnavailable(Exception):
    """The store cannot be reached for now (database restarting, no free connection): nothing was
    written; the request may be retried (answered 503)."""


class StoreConflict(StoreUnavailable):
    """The transaction met another one it could not run beside (PostgreSQL found a deadlock, or a
    serialization failure) and was rolled back: nothing was written, and running it again may succeed."""


@dataclass
class TimerRow:
    id: str
    due_at: float
    kind: str
    payload: dict[str, Any]


@dataclass
class DeliveryRow:
    """One event (or one batch member) on its way to one destination."""

    id: str
    kind: str  # "eventgrid" (to a subscription's destination) or "callback" (Call Automation)
    event_id: str
    url: str
    created_at: float
    next_attempt_at: float
    subscription_id: str | None = None
    attempts: int = 0
    max_attempts: int = 30
    expires_at: float | None = None
    status: str = "pending"  # pending | delivered | dropped | deadLettered
    last_status: int | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_attempt_at: float | None = None
    lease_until: float | None = None
    reason: str | None = None  # why it ended: deadLetterReason or the drop reason
    audience: str | None = None  # a callback's JWT audience: its resource's immutable id


@dataclass
class AttemptRow:
    """One attempt of one delivery (a batch of N events is N attempts with the same timing)."""

    delivery_id: str
    attempt: int  # 1-based
    started_at: float
    status: int | None
    outcome: str
    error: str | None
    duration_ms: float
    batch_size: int


@dataclass
class DeadLetterRow:
    """A dead-lettered event: `item` is the JSON element written to the blob (eventgrid.md 4.6)."""

    id: str
    delivery_id: str
    event_id: str
    subscription_id: str
    subscription_name: str
    reason: str
    item: dict[str, Any]
    destination: dict[str, Any]
    created_at: float
    write_due_at: float
    write_status: str = "pending"  # pending | written | failed
    location: str | None = None
    write_error: str | None = None
    replayed_at: float | None = None
    replay_delivery_id: str | None = None


class StoreTx(Protocol):
    # Runs `action` once the transaction has committed (never if it rolls back): how in-memory parts
    # such as the media plane follow stored state without acting on a change that did not happen.
    def after_commit(self, action: Callable[[], None]) -> None: ...

    async def lock(self, name: str) -> None:
        """Wait until no other transaction (of any node) holds `name`, then hold it until this one ends.
        For what is read absent and then created (a shared key at start): SQLite's transactions are
        exclusive already."""
        ...

    # resource metadata
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...

    # Communication resources beside the default one (which lives in meta); keyed by name
    async def put_resource(self, name: str, immutable_id: str, created_at: float, doc: dict[str, Any]) -> None: ...
    async def list_resources(self) -> list[dict[str, Any]]: ...
    async def delete_resource(self, name: str) -> bool: ...
    # what deleting a resource removes with it: its identities (raw ids starting with `prefix`)
    async def delete_identities_with_prefix(self, prefix: str) -> int: ...

    # identities
    async def add_identity(self, identity_id: str, created_at: float) -> None: ...
    async def get_identity(self, identity_id: str) -> dict[str, Any] | None: ...
    async def list_identities(self, limit: int, prefix: str = "") -> list[dict[str, Any]]:
        """The newest `limit` identities whose id starts with `prefix` (a resource's), newest first."""
        ...

    async def delete_identity(self, identity_id: str) -> bool: ...
    async def revoke_identity_tokens(self, identity_id: str, at: float) -> None: ...

    # owned phone numbers; each belongs to one resource (`resource_id`: its immutable id)
    async def add_phone_number(self, number: str, doc: dict[str, Any], resource_id: str) -> None: ...
    async def get_phone_number(self, number: str) -> dict[str, Any] | None:
        """The number's document, whichever resource owns it (a number is owned once server-wide)."""
        ...

    async def phone_number_owner(self, number: str) -> str | None: ...
    async def list_phone_numbers(self, resource_id: str, skip: int, top: int) -> list[dict[str, Any]]: ...
    async def count_phone_numbers(self, resource_id: str) -> int: ...
    async def delete_phone_number(self, number: str) -> bool: ...
    async def delete_phone_numbers_of(self, resource_id: str) -> int: ...

    # buying numbers: searches, reservations, their operations, and the numbers they hold
    async def put_number_search(self, search_id: str, doc: dict[str, Any]) -> None: ...
    async def get_number_search(self, search_id: str) -> dict[str, Any] | None: ...
    async def put_number_reservation(self, reservation_id: str, created_at: float, doc: dict[str, Any]) -> None: ...
    async def get_number_reservation(self, reservation_id: str) -> dict[str, Any] | None: ...
    async def list_number_reservations(self, skip: int, top: int) -> list[dict[str, Any]]: ...
    async def delete_number_reservation(self, reservation_id: str) -> bool: ...
    async def put_number_operation(self, operation_id: str, doc: dict[str, Any]) -> None: ...
    async def get_number_operation(self, operation_id: str) -> dict[str, Any] | None: ...
    async def hold_numbers(self, numbers: list[str], holder: str, expires_at: float) -> None:
        """Hold each number for `holder` (replacing any earlier hold of it)."""
        ...

    async def number_holders(self, numbers: list[str], now: float) -> dict[str, str]:
        """The holder of each of `numbers` that is held at `now`."""
        ...

    async def release_holds(self, holder: str, numbers: list[str] | None = None) -> None:
        """Drop the holder's holds (of `numbers` only, when given)."""
        ...

    # simulated devices
    async def put_endpoint(self, raw_id: str, doc: dict[str, Any]) -> None: ...
    async def get_endpoint(self, raw_id: str) -> dict[str, Any] | None: ...
    async def list_endpoints(self) -> list[dict[str, Any]]:
        """Every scripted device, in raw id order."""
        ...

    # calls
    async def put_call(self, server_call_id: str, doc: dict[str, Any], updated_at: float) -> None: ...
    async def get_call(self, server_call_id: str) -> dict[str, Any] | None: ...
    async def list_calls(self, limit: int, resource_ids: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The `limit` calls changed last, of the resources named (their docs' `resource_id`; "" for calls
        saved before there were several), or of all."""
        ...

    async def add_call_connection(self, call_connection_id: str, server_call_id: str) -> None: ...
    async def get_call_id_for_connection(self, call_connection_id: str) -> str | None: ...

    # repeatable requests (Repeatability-Request-ID); a doc is {fingerprint, status, response}
    async def get_repeatable(self, request_id: str, now: float) -> dict[str, Any] | None: ...
    async def put_repeatable(self, request_id: str, doc: dict[str, Any], now: float, expires_at: float) -> None: ...
    async def delete_repeatable(self, request_id: str) -> None: ...

    # call recordings
    async def put_recording(self, recording_id: str, server_call_id: str, doc: dict[str, Any]) -> None: ...
    async def get_recording(self, recording_id: str) -> dict[str, Any] | None: ...

    # timers (ring timeouts and the like)
    async def add_timer(self, timer: TimerRow) -> None: ...
    async def due_timers(self, now: float, limit: int) -> list[TimerRow]: ...
    async def delete_timer(self, timer_id: str) -> None: ...
    async def next_timer_due(self) -> float | None: ...

    # event subscriptions (ARM resources); keys are lower-cased ARM ids
    async def put_subscription(self, sub_id: str, doc: dict[str, Any]) -> None: ...
    async def get_subscription(self, sub_id: str) -> dict[str, Any] | None: ...
    async def list_subscriptions(self) -> list[dict[str, Any]]: ...
    async def delete_subscription(self, sub_id: str) -> bool: ...

    # Event Grid topics (custom and system topics; ARM resources); keys are lower-cased ARM ids
    async def put_topic(self, topic_id: str, kind: str, name: str, doc: dict[str, Any]) -> None: ...
    async def get_topic(self, topic_id: str) -> dict[str, Any] | None: ...
    async def find_topic_by_name(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def list_topics(self, kind: str) -> list[dict[str, Any]]: ...
    async def delete_topic(self, topic_id: str) -> bool: ...

    # the outbox: events and their deliveries
    async def add_event(self, event_id: str, topic: str, body: str, created_at: float) -> None: ...
    async def add_delivery(self, row: DeliveryRow, owner: str = "") -> None:
        """Insert `row`; one with `lease_until` set goes in leased until then in `owner`'s name, as
        `claim_deliveries` would leave it (out of the due range until the lease ends). `row` is not changed."""
        ...

    async def claim_deliveries(
        self, now: float, limit: int, lease_until: float, owner: str = ""
    ) -> list[tuple[DeliveryRow, str]]:
        """Lease up to `limit` due rows until `lease_until`, in `owner`'s name (the claiming node's)."""
        ...

    async def finish_attempt(self, row: DeliveryRow) -> None: ...
    async def next_delivery_due(self, now: float) -> float | None: ...
    async def list_deliveries(self, limit: int, subscription_id: str | None = None) -> list[DeliveryRow]: ...
    async def release_leases(self, owner: str = "") -> None:
        """Rows leased by a process that is gone are due again now: on a store of one node, every lease;
        on a shared one, only those `owner` took (never another live node's)."""
        ...

    # delivery engine (bulk): outcomes, attempt history, dead letters, metrics
    async def finish_attempts(self, rows: list[DeliveryRow], attempts: list[AttemptRow]) -> None: ...
    async def settle_late_answer(self, attempts: list[tuple[str, int]], status: int, note: str, now: float) -> set[str]:
        """A timed-out attempt (delivery id, attempt number) answered 2xx late: rows still waiting for
        its retry become delivered and the attempt keeps the answer; returns the ids settled."""
        ...

    async def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[AttemptRow]]: ...
    async def list_deliveries_by(
        self, limit: int, *, subscription_id: str | None = None, status: str | None = None
    ) -> list[DeliveryRow]: ...
    async def add_dead_letters(self, rows: list[DeadLetterRow]) -> None: ...
    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRow | None: ...
    async def list_dead_letters(self, limit: int, subscription_id: str | None = None) -> list[DeadLetterRow]: ...
    async def due_dead_letter_writes(self, now: float, limit: int) -> list[DeadLetterRow]: ...
    async def next_dead_letter_write_due(self) -> float | None: ...
    async def update_dead_letters(self, rows: list[DeadLetterRow]) -> None: ...
    # Event Grid metrics: durable counters, (topic, subscription id or '', metric, label, value)
    async def add_metric_counts(self, counts: list[tuple[str, str, str, str, float]]) -> None: ...
    async def metric_counts(self) -> list[tuple[str, str, str, str, float]]: ...
    async def purge_ended_deliveries(self, ended_before: float, limit: int) -> int: ...

    async def reset(self) -> None: ...


class Store(Protocol):
    url: str
    # Several nodes may share it: keys live in it (not in a data dir), and a node takes back early only the
    # leases it took itself (release_leases), never another's.
    shared: bool

    @property
    def location(self) -> str:
        """Where state lives, for a banner (no password)."""
        ...

    async def open(self, *, verify: bool = False) -> None: ...
    async def close(self) -> None: ...
    async def own_leases(self, owner: str) -> bool:
        """Hold the name `owner` for this process's leases until the store is closed. False when another
        live process holds it (a copied data directory): the caller then leases under a name of its own
        and must not release `owner`'s leases."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]: ...
    async def peek_meta(self, key: str) -> str | None:
        """One committed `meta` value, read outside any transaction and without holding its row: for a
        value that many requests only compare (the resources' version), at the price of one statement."""
        ...

    def on_change(self, topic: str, action: Callable[[], None]) -> None:
        """Call `action` when another process commits work of `topic` ("delivery", "timer"); a store
        that only one process uses never does."""
        ...
