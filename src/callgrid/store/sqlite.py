"""SQLite store (WAL): the embedded default. One connection, one writer at a time.

Statements are microseconds, so they run on the event loop directly; an asyncio lock makes each
`transaction()` exclusive, which also makes read-modify-write of a call atomic.

Group commit: transactions that come while one is waiting for its COMMIT join it, each in a savepoint
of its own (a failed one rolls back alone), and they all share that one COMMIT; none of them returns
before it. A COMMIT costs more than the statements of a typical transaction (it writes every page the
transaction changed, and pages changed by several members of a group are written once), so under load
more transactions share each one. What is acknowledged is as durable as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from callgrid import jsonio
from callgrid.store.base import (
    AttemptRow,
    DeadLetterRow,
    DeliveryRow,
    DuplicateKey,
    StoreTx,
    StoreUnusable,
    TimerRow,
)
from callgrid.store.schema import STATE_TABLES, delivery_progress_columns, migrations

_log = logging.getLogger(__name__)
_DELIVERY_COLUMNS = [f.name for f in fields(DeliveryRow)]
_DELIVERY_PROGRESS = delivery_progress_columns(_DELIVERY_COLUMNS)
_DELIVERY_PROGRESS_SQL = f"UPDATE deliveries SET {', '.join(f'{c} = ?' for c in _DELIVERY_PROGRESS)} WHERE id = ?"
_ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRow)]
_ADD_DELIVERY_SQL = (
    f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) VALUES ({', '.join('?' for _ in _DELIVERY_COLUMNS)})"
)
_NEXT_ATTEMPT = _DELIVERY_COLUMNS.index("next_attempt_at")


def _values(row: object, columns: list[str]) -> tuple[Any, ...]:
    # Not dataclasses.astuple: it deep-copies every field (~50 us a row on the delivery hot path).
    return tuple(getattr(row, c) for c in columns)


def _insert_values(row: DeliveryRow) -> list[Any]:
    """A new row's values; one inserted leased is out of the due range until its lease ends, as a claim
    leaves it (claim_deliveries)."""
    values = list(_values(row, _DELIVERY_COLUMNS))
    if row.lease_until is not None:
        values[_NEXT_ATTEMPT] = row.lease_until
    return values


_DEAD_LETTER_COLUMNS = [f.name for f in fields(DeadLetterRow)]
_DEAD_LETTER_JSON = ("item", "destination")


def _dead_letter_values(row: DeadLetterRow) -> tuple[Any, ...]:
    return tuple(_dumps(getattr(row, c)) if c in _DEAD_LETTER_JSON else getattr(row, c) for c in _DEAD_LETTER_COLUMNS)


def _dead_letter(values: tuple[Any, ...]) -> DeadLetterRow:
    loaded = [
        jsonio.loads(v) if c in _DEAD_LETTER_JSON else v for c, v in zip(_DEAD_LETTER_COLUMNS, values, strict=True)
    ]
    return DeadLetterRow(*loaded)


class SqliteStore:
    shared = False

    def __init__(self, url: str, synchronous: str = "NORMAL") -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._lock = asyncio.Lock()
        self._group: _Group | None = None  # the transaction open for the next COMMIT, if any
        self._committer: asyncio.Task[None] | None = None

    async def open(self, *, verify: bool = False) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A 0-byte file is initialised, with a warning, not refused: it is what `touch`, or a first start that
        # died before its first write, leaves; SQLite reads it as an empty database and there is nothing in
        # it to protect. Were it a truncated copy of a real store, refusing would not bring the data back.
        try:
            if self.path.is_file() and self.path.stat().st_size == 0:
                _log.warning("the database file %s is empty (0 bytes); initialising a new store in it", self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise self._unusable(exc) from None
        try:
            if verify:
                self._verify(conn)
            self._configure(conn)
        except BaseException as exc:
            conn.close()
            self._conn = None
            if isinstance(exc, sqlite3.Error):
                raise self._unusable(exc) from None
            raise

    def _unusable(self, exc: Exception) -> StoreUnusable:
        return StoreUnusable(
            f"The database {self.path} cannot be used: {exc}. Check that the file is readable and writable by "
            "this user and is a callgrid SQLite database; move it aside to start with an empty store."
        )

    def _verify(self, conn: sqlite3.Connection) -> None:
        # quick_check reads every page (not the index contents): damage found now is a clear refusal at start
        # rather than 500s on whichever request first touches a bad page.
        try:
            problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
            problems = [str(exc)]
        if problems != ["ok"]:
            raise StoreUnusable(
                f"The database {self.path} is damaged (SQLite quick_check: {'; '.join(problems)}). "
                "callgrid will not serve from it. Stop, then restore it from a backup, or salvage what is left "
                f"with `sqlite3 {self.path} .recover | sqlite3 recovered.db`, or move it aside to start empty."
            )

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a killed process (the WAL is in the OS); FULL also survives power loss.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        # A group commit's members each run in a savepoint, whose undo pages go to a temporary journal:
        # in memory, not a file written on every transaction that joins a group.
        conn.execute("PRAGMA temp_store=MEMORY")
        self._conn = conn
        self._migrate(conn)
        # Checkpoints copy the WAL back into the database file and fsync it: milliseconds that SQLite's
        # automatic checkpoint would spend inside some commit, stalling the event loop. They run on a
        # thread instead (sqlite releases the GIL), mostly beside the writer; a last short pass holds the
        # write lock so that it completes and the next write can start the WAL over (a checkpoint that
        # commits keep overtaking never lets it restart: the WAL grew ~25 MB/s at 200 calls/s).
        # The automatic checkpoint stays as a backstop, far above what the thread lets accumulate.
        conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        self._checkpointer = _Checkpointer(self.path, self._quiescent)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, _name, statements in migrations():
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process opening the same file (a CLI command beside `serve`) may have applied
                # it while this one waited for the write lock.
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    conn.execute("COMMIT")
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @property
    def location(self) -> str:
        return self.url

    def on_change(self, topic: str, action: Callable[[], None]) -> None:
        # One process serves from this file: it wakes its own loops.
        return None

    async def own_leases(self, owner: str) -> bool:
        # One process per data directory (its lock), and a SQLite file is one data directory's.
        return True

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            async with self._quiescent():
                self._conn.close()
                self._conn = None

    async def peek_meta(self, key: str) -> str | None:
        if self._conn is None:
            raise RuntimeError("store is not open")
        async with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        if self._conn is None:
            raise RuntimeError("store is not open")
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("store is not open")
            group = self._group
            first = group is None
            if group is None:
                conn.execute("BEGIN IMMEDIATE")
                group = self._group = _Group(asyncio.get_running_loop().create_future())
                self._committer = asyncio.create_task(self._commit_soon(group), name="sqlite-group-commit")
            else:
                conn.execute("SAVEPOINT member")
            tx = _SqliteTx(conn)
            try:
                yield tx
            except BaseException:
                self._undo(conn, group, first)
                raise
            if not first:
                conn.execute("RELEASE member")
            group.members += 1
        # Shielded: a caller cancelled here must not cancel the group's COMMIT for the others; its own
        # writes are committed with them.
        await asyncio.shield(group.committed)
        tx.run_after_commit()

    def _undo(self, conn: sqlite3.Connection, group: _Group, first: bool) -> None:
        """Take back what a failed transaction wrote, and only that."""
        if not conn.in_transaction:
            # SQLite rolled the whole group back itself (it may on a full disk or an I/O error).
            self._end_group(group, sqlite3.OperationalError("the transaction was rolled back by SQLite"))
        elif first:
            conn.execute("ROLLBACK")  # nobody else has joined yet (the lock was held throughout)
            self._end_group(group, None)
        else:
            conn.execute("ROLLBACK TO member")
            conn.execute("RELEASE member")

    def _end_group(self, group: _Group, error: BaseException | None) -> None:
        if self._group is group:
            self._group = None
        if group.committed.done():
            return
        if error is not None and group.members:
            group.committed.set_exception(error)
        else:
            group.committed.set_result(None)

    def _commit_group(self, group: _Group) -> None:
        """COMMIT the open group (the lock held): every member is then durable, or every member fails."""
        assert self._conn is not None
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._end_group(group, exc)
        else:
            self._end_group(group, None)

    async def _commit_soon(self, group: _Group) -> None:
        # One turn of the loop: the transactions already due to run in it join before the COMMIT.
        await asyncio.sleep(0)
        async with self._lock:
            if self._group is group:
                self._commit_group(group)

    @asynccontextmanager
    async def _quiescent(self) -> AsyncIterator[None]:
        """The write lock with no transaction open (an open group is committed first): for the WAL's
        restarting checkpoint pass, and for closing."""
        async with self._lock:
            if self._group is not None:
                self._commit_group(self._group)
            yield


@dataclass
class _Group:
    """Transactions sharing one COMMIT; `committed` resolves once it is durable (or fails for them all)."""

    committed: asyncio.Future[None]
    members: int = 0


class _Checkpointer:
    """WAL checkpoints on a worker thread, with their own connection, driven from the event loop."""

    def __init__(
        self, path: Path, write_lock: Callable[[], contextlib.AbstractAsyncContextManager[None]], interval: float = 0.2
    ) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._write_lock = write_lock
        self._interval = interval
        # One thread of its own: a checkpoint still running when the task is cancelled finishes
        # before the connection is closed behind it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="sqlite-checkpoint")

    def _checkpoint(self) -> int:
        """One PASSIVE checkpoint (it never waits for nor blocks a writer); returns the WAL's frames."""
        # fetchall, not fetchone: a statement left open keeps a read mark, and the WAL could never restart.
        ((busy, frames, _copied),) = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return 0 if busy else int(frames)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # Copy most of it beside the writer; then finish with writers held off, if it grew enough
                # to be worth restarting (the hold is one short pass and its fsync, on the thread).
                if await self._loop.run_in_executor(self._thread, self._checkpoint) < _RESTART_FRAMES:
                    continue
                async with self._write_lock():
                    await self._loop.run_in_executor(self._thread, self._checkpoint)
            except sqlite3.Error as exc:
                # Nothing is lost meanwhile (the WAL holds every commit); try again next time.
                _log.warning("WAL checkpoint failed: %s", exc)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._loop.run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=False)


# The WAL restarts once it holds this many frames (pages, 16 MB); SQLite's own checkpoint only past the
# larger one. The restarting pass holds writers off for a few milliseconds: at 200 calls/s a 500-frame
# threshold made that every 0.2 s, this one about every 0.5 s (routed p99 lower in each of 3 alternating runs).
_RESTART_FRAMES = 4_000
_AUTOCHECKPOINT_PAGES = 20_000


def _doc(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if row is None else jsonio.loads(row[0])  # type: ignore[no-any-return]


def _dumps(doc: dict[str, Any]) -> str:
    return jsonio.dumps(doc)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)

    async def lock(self, name: str) -> None:
        # Transactions are exclusive already (BEGIN IMMEDIATE under the store's lock).
        return None

    def run_after_commit(self) -> None:
        for action in self._after_commit:
            try:
                action()
            except Exception:
                # The transaction is committed: what follows it must not turn that into an error.
                _log.exception("an after-commit action failed")

    def _one(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._c.execute(sql, args).fetchone()
        return row

    def _insert(self, sql: str, *args: Any) -> None:
        try:
            self._c.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    # meta
    async def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", key)
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        self._c.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # Communication resources
    async def put_resource(self, name: str, immutable_id: str, created_at: float, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO communication_resources (name, immutable_id, created_at, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            (name, immutable_id, created_at, _dumps(doc)),
        )

    async def list_resources(self) -> list[dict[str, Any]]:
        rows = self._c.execute("SELECT doc FROM communication_resources ORDER BY created_at, name").fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_resource(self, name: str) -> bool:
        return self._c.execute("DELETE FROM communication_resources WHERE name = ?", (name,)).rowcount > 0

    # identities
    async def add_identity(self, identity_id: str, created_at: float) -> None:
        self._insert("INSERT INTO identities (id, created_at) VALUES (?, ?)", identity_id, created_at)

    async def get_identity(self, identity_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT id, created_at, tokens_revoked_at FROM identities WHERE id = ?", identity_id)
        if row is None:
            return None
        return {"id": row[0], "createdAt": row[1], "tokensRevokedAt": row[2]}

    async def list_identities(self, limit: int, prefix: str = "") -> list[dict[str, Any]]:
        rows = self._c.execute(
            "SELECT id, created_at, tokens_revoked_at FROM identities WHERE substr(id, 1, ?) = ? "
            "ORDER BY created_at DESC, id LIMIT ?",
            (len(prefix), prefix, limit),
        ).fetchall()
        return [{"id": r[0], "createdAt": r[1], "tokensRevokedAt": r[2]} for r in rows]

    async def delete_identity(self, identity_id: str) -> bool:
        return self._c.execute("DELETE FROM identities WHERE id = ?", (identity_id,)).rowcount > 0

    async def revoke_identity_tokens(self, identity_id: str, at: float) -> None:
        self._c.execute("UPDATE identities SET tokens_revoked_at = ? WHERE id = ?", (at, identity_id))

    async def delete_identities_with_prefix(self, prefix: str) -> int:
        # No LIKE: an immutable id is a GUID, but '_' in the prefix would be a LIKE wildcard.
        sql = "DELETE FROM identities WHERE substr(id, 1, ?) = ?"
        return int(self._c.execute(sql, (len(prefix), prefix)).rowcount)

    # phone numbers
    async def add_phone_number(self, number: str, doc: dict[str, Any], resource_id: str) -> None:
        self._insert(
            "INSERT INTO phone_numbers (number, doc, resource_id) VALUES (?, ?, ?)", number, _dumps(doc), resource_id
        )

    async def phone_number_owner(self, number: str) -> str | None:
        row = self._one("SELECT resource_id FROM phone_numbers WHERE number = ?", number)
        return None if row is None else str(row[0])

    async def delete_phone_numbers_of(self, resource_id: str) -> int:
        return int(self._c.execute("DELETE FROM phone_numbers WHERE resource_id = ?", (resource_id,)).rowcount)

    async def get_phone_number(self, number: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM phone_numbers WHERE number = ?", number))

    async def list_phone_numbers(self, resource_id: str, skip: int, top: int) -> list[dict[str, Any]]:
        rows = self._c.execute(
            "SELECT doc FROM phone_numbers WHERE resource_id = ? ORDER BY number LIMIT ? OFFSET ?",
            (resource_id, top, skip),
        ).fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def count_phone_numbers(self, resource_id: str) -> int:
        row = self._one("SELECT COUNT(*) FROM phone_numbers WHERE resource_id = ?", resource_id)
        return int(row[0]) if row else 0

    async def delete_phone_number(self, number: str) -> bool:
        return self._c.execute("DELETE FROM phone_numbers WHERE number = ?", (number,)).rowcount > 0

    # buying numbers
    async def put_number_search(self, search_id: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO number_searches (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (search_id, _dumps(doc)),
        )

    async def get_number_search(self, search_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM number_searches WHERE id = ?", search_id))

    async def put_number_reservation(self, reservation_id: str, created_at: float, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO number_reservations (id, created_at, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (reservation_id, created_at, _dumps(doc)),
        )

    async def get_number_reservation(self, reservation_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM number_reservations WHERE id = ?", reservation_id))

    async def list_number_reservations(self, skip: int, top: int) -> list[dict[str, Any]]:
        rows = self._c.execute(
            "SELECT doc FROM number_reservations ORDER BY created_at, id LIMIT ? OFFSET ?", (top, skip)
        ).fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_number_reservation(self, reservation_id: str) -> bool:
        return self._c.execute("DELETE FROM number_reservations WHERE id = ?", (reservation_id,)).rowcount > 0

    async def put_number_operation(self, operation_id: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO number_operations (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (operation_id, _dumps(doc)),
        )

    async def get_number_operation(self, operation_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM number_operations WHERE id = ?", operation_id))

    async def hold_numbers(self, numbers: list[str], holder: str, expires_at: float) -> None:
        self._c.executemany(
            "INSERT INTO number_holds (number, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (number) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            [(n, holder, expires_at) for n in numbers],
        )

    async def number_holders(self, numbers: list[str], now: float) -> dict[str, str]:
        held: dict[str, str] = {}
        for start in range(0, len(numbers), 500):
            chunk = numbers[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._c.execute(
                f"SELECT number, holder FROM number_holds WHERE expires_at > ? AND number IN ({marks})",
                (now, *chunk),
            ).fetchall()
            held.update({r[0]: r[1] for r in rows})
        return held

    async def release_holds(self, holder: str, numbers: list[str] | None = None) -> None:
        if numbers is None:
            self._c.execute("DELETE FROM number_holds WHERE holder = ?", (holder,))
            return
        self._c.executemany("DELETE FROM number_holds WHERE holder = ? AND number = ?", [(holder, n) for n in numbers])

    # endpoints
    async def put_endpoint(self, raw_id: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO endpoints (raw_id, doc) VALUES (?, ?) ON CONFLICT (raw_id) DO UPDATE SET doc = excluded.doc",
            (raw_id, _dumps(doc)),
        )

    async def get_endpoint(self, raw_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM endpoints WHERE raw_id = ?", raw_id))

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return [jsonio.loads(r[0]) for r in self._c.execute("SELECT doc FROM endpoints ORDER BY raw_id").fetchall()]

    # calls
    async def put_call(self, server_call_id: str, doc: dict[str, Any], updated_at: float) -> None:
        self._c.execute(
            "INSERT INTO calls (server_call_id, doc, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (server_call_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            (server_call_id, _dumps(doc), updated_at),
        )

    async def get_call(self, server_call_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM calls WHERE server_call_id = ?", server_call_id))

    async def list_calls(self, limit: int, resource_ids: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        if resource_ids is None:
            rows = self._c.execute("SELECT doc FROM calls ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        else:
            # Filtered while walking the updated_at index: it stops at the limit'th call of the resources.
            marks = ", ".join("?" * len(resource_ids))
            rows = self._c.execute(
                f"SELECT doc FROM calls WHERE COALESCE(json_extract(doc, '$.resource_id'), '') IN ({marks}) "
                "ORDER BY updated_at DESC LIMIT ?",
                (*resource_ids, limit),
            ).fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def add_call_connection(self, call_connection_id: str, server_call_id: str) -> None:
        self._insert(
            "INSERT INTO call_connections (call_connection_id, server_call_id) VALUES (?, ?)",
            call_connection_id,
            server_call_id,
        )

    async def get_call_id_for_connection(self, call_connection_id: str) -> str | None:
        row = self._one("SELECT server_call_id FROM call_connections WHERE call_connection_id = ?", call_connection_id)
        return None if row is None else str(row[0])

    # repeatable requests
    async def get_repeatable(self, request_id: str, now: float) -> dict[str, Any] | None:
        # Expired entries are forgotten as they are met, and swept with them.
        self._c.execute("DELETE FROM repeatable_requests WHERE expires_at <= ?", (now,))
        row = self._one(
            "SELECT fingerprint, status, response FROM repeatable_requests WHERE request_id = ?", request_id
        )
        if row is None:
            return None
        return {"fingerprint": row[0], "status": row[1], "response": None if row[2] is None else jsonio.loads(row[2])}

    async def put_repeatable(self, request_id: str, doc: dict[str, Any], now: float, expires_at: float) -> None:
        response = doc.get("response")
        self._c.execute(
            "INSERT INTO repeatable_requests (request_id, fingerprint, status, response, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, "
            "response = excluded.response",
            (
                request_id,
                doc["fingerprint"],
                doc.get("status"),
                None if response is None else _dumps(response),
                now,
                expires_at,
            ),
        )

    async def delete_repeatable(self, request_id: str) -> None:
        self._c.execute("DELETE FROM repeatable_requests WHERE request_id = ?", (request_id,))

    # recordings
    async def put_recording(self, recording_id: str, server_call_id: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO recordings (id, server_call_id, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (recording_id, server_call_id, _dumps(doc)),
        )

    async def get_recording(self, recording_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM recordings WHERE id = ?", recording_id))

    # timers
    async def add_timer(self, timer: TimerRow) -> None:
        self._insert(
            "INSERT INTO timers (id, due_at, kind, payload) VALUES (?, ?, ?, ?)",
            timer.id,
            timer.due_at,
            timer.kind,
            _dumps(timer.payload),
        )

    async def due_timers(self, now: float, limit: int) -> list[TimerRow]:
        rows = self._c.execute(
            "SELECT id, due_at, kind, payload FROM timers WHERE due_at <= ? ORDER BY due_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [TimerRow(r[0], r[1], r[2], jsonio.loads(r[3])) for r in rows]

    async def delete_timer(self, timer_id: str) -> None:
        self._c.execute("DELETE FROM timers WHERE id = ?", (timer_id,))

    async def next_timer_due(self) -> float | None:
        row = self._one("SELECT MIN(due_at) FROM timers")
        return None if row is None or row[0] is None else float(row[0])

    # subscriptions
    async def put_subscription(self, sub_id: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO event_subscriptions (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (sub_id, _dumps(doc)),
        )

    async def get_subscription(self, sub_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM event_subscriptions WHERE id = ?", sub_id))

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        rows = self._c.execute("SELECT doc FROM event_subscriptions ORDER BY id").fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_subscription(self, sub_id: str) -> bool:
        deleted = self._c.execute("DELETE FROM event_subscriptions WHERE id = ?", (sub_id,)).rowcount > 0
        # Pending deliveries die with their subscription, as in Azure, and are counted as dropped.
        self._c.execute(
            "INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value) "
            "SELECT lower(e.topic), d.subscription_id, 'DroppedEventCount', 'SubscriptionDeleted', COUNT(*) "
            "FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.subscription_id = ? AND d.status = 'pending' GROUP BY lower(e.topic) "
            "ON CONFLICT (topic, subscription_id, metric, label) DO UPDATE SET value = value + excluded.value",
            (sub_id,),
        )
        self._c.execute(
            "UPDATE deliveries SET status = 'dropped', last_outcome = 'SubscriptionDeleted', "
            "reason = 'SubscriptionDeleted', lease_until = NULL "
            "WHERE subscription_id = ? AND status = 'pending'",
            (sub_id,),
        )
        return deleted

    # Event Grid topics
    async def put_topic(self, topic_id: str, kind: str, name: str, doc: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT INTO eventgrid_topics (id, kind, name, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (topic_id, kind, name.lower(), _dumps(doc)),
        )

    async def get_topic(self, topic_id: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM eventgrid_topics WHERE id = ?", topic_id))

    async def find_topic_by_name(self, kind: str, name: str) -> dict[str, Any] | None:
        return _doc(self._one("SELECT doc FROM eventgrid_topics WHERE kind = ? AND name = ?", kind, name.lower()))

    async def list_topics(self, kind: str) -> list[dict[str, Any]]:
        rows = self._c.execute("SELECT doc FROM eventgrid_topics WHERE kind = ? ORDER BY id", (kind,)).fetchall()
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_topic(self, topic_id: str) -> bool:
        return self._c.execute("DELETE FROM eventgrid_topics WHERE id = ?", (topic_id,)).rowcount > 0

    # outbox
    async def add_event(self, event_id: str, topic: str, body: str, created_at: float) -> None:
        self._insert(
            "INSERT INTO events (id, topic, body, created_at) VALUES (?, ?, ?, ?)",
            event_id,
            topic,
            body,
            created_at,
        )

    async def add_delivery(self, row: DeliveryRow, owner: str = "") -> None:
        # No owner is written: one node per SQLite file, so every lease in it is that node's.
        self._insert(_ADD_DELIVERY_SQL, *_insert_values(row))

    async def claim_deliveries(
        self, now: float, limit: int, lease_until: float, owner: str = ""
    ) -> list[tuple[DeliveryRow, str]]:
        cols = ", ".join("d." + c for c in _DELIVERY_COLUMNS)
        rows = self._c.execute(
            f"SELECT {cols}, e.body FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until <= ?) "
            # rowid breaks ties in insertion order: callbacks raised together go out in the order raised.
            "ORDER BY d.next_attempt_at, d.rowid LIMIT ?",
            (now, now, limit),
        ).fetchall()
        claimed = []
        for r in rows:
            row = DeliveryRow(*r[:-1])
            row.lease_until = lease_until
            claimed.append((row, str(r[-1])))
        # Leased rows move out of the due range (next_attempt_at = lease end), so claim scans skip
        # what is in flight; release_leases() makes them due again after a crash. No owner is written:
        # one node per SQLite file, so every lease in it is that node's.
        self._c.executemany(
            "UPDATE deliveries SET lease_until = ?, next_attempt_at = ? WHERE id = ?",
            [(lease_until, lease_until, row.id) for row, _ in claimed],
        )
        return claimed

    async def finish_attempt(self, row: DeliveryRow) -> None:
        self._c.execute(_DELIVERY_PROGRESS_SQL, (*_values(row, _DELIVERY_PROGRESS), row.id))

    async def next_delivery_due(self, now: float) -> float | None:
        # A claim moves next_attempt_at to the lease's end, so the due index answers this alone.
        row = self._one("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def list_deliveries(self, limit: int, subscription_id: str | None = None) -> list[DeliveryRow]:
        cols = ", ".join(_DELIVERY_COLUMNS)
        if subscription_id is None:
            rows = self._c.execute(
                f"SELECT {cols} FROM deliveries ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._c.execute(
                f"SELECT {cols} FROM deliveries WHERE subscription_id = ? ORDER BY created_at DESC LIMIT ?",
                (subscription_id, limit),
            ).fetchall()
        return [DeliveryRow(*r) for r in rows]

    async def release_leases(self, owner: str = "") -> None:
        # One node per SQLite file (its data directory's lock): every lease is this node's past life's.
        self._c.execute(
            "UPDATE deliveries SET lease_until = NULL, next_attempt_at = COALESCE(last_attempt_at, created_at) "
            "WHERE status = 'pending' AND lease_until IS NOT NULL"
        )

    # delivery engine (bulk)
    async def finish_attempts(self, rows: list[DeliveryRow], attempts: list[AttemptRow]) -> None:
        self._c.executemany(_DELIVERY_PROGRESS_SQL, [(*_values(r, _DELIVERY_PROGRESS), r.id) for r in rows])
        self._c.executemany(
            "INSERT OR REPLACE INTO delivery_attempts (delivery_id, attempt, started_at, status, outcome, error, "
            "duration_ms, batch_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_values(a, _ATTEMPT_COLUMNS) for a in attempts],
        )

    async def settle_late_answer(self, attempts: list[tuple[str, int]], status: int, note: str, now: float) -> set[str]:
        settled: set[str] = set()
        for delivery_id, attempt in attempts:
            # Only if that attempt is the last one recorded and no retry holds a lease on the row.
            changed = self._c.execute(
                "UPDATE deliveries SET status = 'delivered', last_status = ?, last_outcome = 'Succeeded', "
                "last_error = ?, reason = NULL WHERE id = ? AND status = 'pending' AND attempts = ? "
                "AND (lease_until IS NULL OR lease_until <= ?)",
                (status, note, delivery_id, attempt, now),
            ).rowcount
            if changed:
                settled.add(delivery_id)
                self._c.execute(
                    "UPDATE delivery_attempts SET status = ?, error = ? WHERE delivery_id = ? AND attempt = ?",
                    (status, note, delivery_id, attempt),
                )
        return settled

    async def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[AttemptRow]]:
        found: dict[str, list[AttemptRow]] = {i: [] for i in delivery_ids}
        for start in range(0, len(delivery_ids), 500):
            chunk = delivery_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = self._c.execute(
                f"SELECT delivery_id, attempt, started_at, status, outcome, error, duration_ms, batch_size "
                f"FROM delivery_attempts WHERE delivery_id IN ({marks}) ORDER BY delivery_id, attempt",
                chunk,
            ).fetchall()
            for r in rows:
                found[r[0]].append(AttemptRow(*r))
        return found

    async def list_deliveries_by(
        self, limit: int, *, subscription_id: str | None = None, status: str | None = None
    ) -> list[DeliveryRow]:
        where, args = [], []
        if subscription_id is not None:
            where.append("subscription_id = ?")
            args.append(subscription_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._c.execute(
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries {clause}ORDER BY created_at DESC, id LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [DeliveryRow(*r) for r in rows]

    async def add_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        self._c.executemany(
            f"INSERT INTO dead_letters ({', '.join(_DEAD_LETTER_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _DEAD_LETTER_COLUMNS)})",
            [_dead_letter_values(r) for r in rows],
        )

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRow | None:
        row = self._one(f"SELECT {', '.join(_DEAD_LETTER_COLUMNS)} FROM dead_letters WHERE id = ?", dead_letter_id)
        return None if row is None else _dead_letter(row)

    async def list_dead_letters(self, limit: int, subscription_id: str | None = None) -> list[DeadLetterRow]:
        cols = ", ".join(_DEAD_LETTER_COLUMNS)
        if subscription_id is None:
            rows = self._c.execute(
                f"SELECT {cols} FROM dead_letters ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._c.execute(
                f"SELECT {cols} FROM dead_letters WHERE subscription_id = ? ORDER BY created_at DESC, id LIMIT ?",
                (subscription_id, limit),
            ).fetchall()
        return [_dead_letter(r) for r in rows]

    async def due_dead_letter_writes(self, now: float, limit: int) -> list[DeadLetterRow]:
        rows = self._c.execute(
            f"SELECT {', '.join(_DEAD_LETTER_COLUMNS)} FROM dead_letters "
            "WHERE write_status = 'pending' AND write_due_at <= ? ORDER BY write_due_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_dead_letter(r) for r in rows]

    async def next_dead_letter_write_due(self) -> float | None:
        row = self._one("SELECT MIN(write_due_at) FROM dead_letters WHERE write_status = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def update_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        assignments = ", ".join(f"{c} = ?" for c in _DEAD_LETTER_COLUMNS[1:])
        self._c.executemany(
            f"UPDATE dead_letters SET {assignments} WHERE id = ?",
            [(*_dead_letter_values(r)[1:], r.id) for r in rows],
        )

    async def add_metric_counts(self, counts: list[tuple[str, str, str, str, float]]) -> None:
        self._c.executemany(
            "INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (topic, subscription_id, metric, label) DO UPDATE SET value = value + excluded.value",
            counts,
        )

    async def metric_counts(self) -> list[tuple[str, str, str, str, float]]:
        rows = self._c.execute("SELECT topic, subscription_id, metric, label, value FROM eventgrid_metrics").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]

    async def purge_ended_deliveries(self, ended_before: float, limit: int) -> int:
        """Forget up to `limit` delivered or dropped rows (with their attempts, then their events once
        nothing refers to them) last claimed before `ended_before`. Dead-lettered rows stay: replayable."""
        rows = self._c.execute(
            "SELECT id, event_id FROM deliveries WHERE status IN ('delivered', 'dropped') AND next_attempt_at < ? "
            "LIMIT ?",
            (ended_before, limit),
        ).fetchall()
        if not rows:
            return 0
        self._c.executemany("DELETE FROM delivery_attempts WHERE delivery_id = ?", [(r[0],) for r in rows])
        self._c.executemany("DELETE FROM deliveries WHERE id = ?", [(r[0],) for r in rows])
        self._c.executemany(
            "DELETE FROM events WHERE id = ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = events.id) "
            "AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE event_id = events.id)",
            [(e,) for e in {r[1] for r in rows}],
        )
        return len(rows)

    async def reset(self) -> None:
        for table in STATE_TABLES:
            self._c.execute(f"DELETE FROM {table}")
