"""PostgreSQL store: several callgrid nodes on one database (psycopg 3 and its async pool).

Each `transaction()` borrows a pooled connection for one database transaction. What SQLite gets from
having one writer, this store gets from row locks, so that it holds across processes too:
- a document read inside a transaction (`get_call`, `get_subscription`, ...) is read `FOR UPDATE`: the
  read-modify-write of a call by two nodes (or two requests of one node) happens one after the other;
- deliveries and timers are claimed `FOR UPDATE SKIP LOCKED`: two nodes never take the same row;
  a claimed delivery carries a lease (moved out of the due range), which expires if its node dies;
- an insert that meets an existing key is `ON CONFLICT DO NOTHING` and raises `DuplicateKey`, leaving
  the transaction usable, as SQLite's does (an error inside a PostgreSQL transaction would abort it).

A transaction that added deliveries or timers notifies the others (`pg_notify`, delivered on commit),
so an idle node's loops wake when another node gives them work. A lost connection or a pool with no
free connection within `pool_timeout` raises `StoreUnavailable` (answered 503), never a hang.

URL: `postgresql://user:password@host:port/database?schema=NAME&pool_size=N&pool_timeout=S`; `schema`
(default `public`) is created if missing, so several callgrid installations can share one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from callgrid import jsonio
from callgrid.errors import InvalidRequest
from callgrid.store.base import (
    AttemptRow,
    DeadLetterRow,
    DeliveryRow,
    DuplicateKey,
    StoreConflict,
    StoreTx,
    StoreUnavailable,
    StoreUnusable,
    TimerRow,
)
from callgrid.store.schema import STATE_TABLES, delivery_progress_columns, for_postgresql, migrations

_log = logging.getLogger(__name__)

_DELIVERY_COLUMNS = [f.name for f in fields(DeliveryRow)]
_DELIVERY_PROGRESS = delivery_progress_columns(_DELIVERY_COLUMNS)
_DELIVERY_PROGRESS_SQL = f"UPDATE deliveries SET {', '.join(f'{c} = %s' for c in _DELIVERY_PROGRESS)} WHERE id = %s"
_ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRow)]
_DELIVERY_COLUMN_LIST = ", ".join(_DELIVERY_COLUMNS)
_NEXT_ATTEMPT = _DELIVERY_COLUMNS.index("next_attempt_at")
_DEAD_LETTER_COLUMNS = [f.name for f in fields(DeadLetterRow)]
_DEAD_LETTER_JSON = ("item", "destination")
_DEAD_LETTER_WRITE_LEASE_SECONDS = 120.0
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _values(row: object, columns: list[str]) -> tuple[Any, ...]:
    return tuple(getattr(row, c) for c in columns)


def _dumps(doc: Any) -> str:
    return jsonio.dumps(doc)


def _doc(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if row is None else jsonio.loads(row[0])  # type: ignore[no-any-return]


def _dead_letter_values(row: DeadLetterRow) -> tuple[Any, ...]:
    return tuple(_dumps(getattr(row, c)) if c in _DEAD_LETTER_JSON else getattr(row, c) for c in _DEAD_LETTER_COLUMNS)


def _dead_letter(values: tuple[Any, ...]) -> DeadLetterRow:
    loaded = [
        jsonio.loads(v) if c in _DEAD_LETTER_JSON else v for c, v in zip(_DEAD_LETTER_COLUMNS, values, strict=True)
    ]
    return DeadLetterRow(*loaded)


def _owner_key(owner: str) -> int | None:
    """What a row stores of its lease owner's name: 8 bytes of its digest, not the name (every claim and
    every outcome rewrites the row, so its width is paid on each; 2^64 makes two names' keys meeting moot)."""
    if not owner:
        return None
    return int.from_bytes(hashlib.blake2b(owner.encode(), digest_size=8).digest(), "big", signed=True)


def _refused(exc: psycopg.DataError) -> InvalidRequest:
    # A value PostgreSQL cannot hold, which SQLite would have (above all a NUL character in an id or a
    # name): the request is refused (400), as a bad value; the transaction rolls back.
    if "NUL" in str(exc):
        return InvalidRequest("Text values may not contain the NUL character (U+0000).")
    return InvalidRequest(f"A value in the request cannot be stored: {str(exc).strip()}")


def redact(url: str) -> str:
    """The URL without its password: what a banner or a log line may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore:
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.schema = query.pop("schema", "public")
        if not _SCHEMA_NAME.match(self.schema):
            raise StoreUnusable(f"schema '{self.schema}' in the store URL: use letters, digits and _ (at most 63).")
        try:
            self._pool_size = int(query.pop("pool_size", "10"))
            self._pool_timeout = float(query.pop("pool_timeout", "5"))
        except ValueError as exc:
            raise StoreUnusable(f"the store URL {redact(url)}: {exc}") from None
        base = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
        given = conninfo_to_dict(base)
        options = str(given.get("options") or "")
        # Every connection of the pool sees this schema's tables first. A statement that runs (or waits for
        # a lock) past a minute, and a server that does not answer a connection within 10 s, end in an error
        # (503), not in a request that hangs.
        self._conninfo = make_conninfo(
            base,
            options=f"-c statement_timeout=60000 {options} -c search_path={self.schema}",
            connect_timeout=given.get("connect_timeout") or 10,
        )
        self._channel = f"callgrid_{self.schema}"[:63]
        self._pool: AsyncConnectionPool | None = None
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._listen_task: asyncio.Task[None] | None = None
        # Holds this process's lease owner name (a session advisory lock) for as long as the store is open.
        self._owner_conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def location(self) -> str:
        return f"{redact(self.url)} (schema {self.schema})"

    def _unusable(self, exc: Exception) -> StoreUnusable:
        return StoreUnusable(
            f"The PostgreSQL store {redact(self.url)} cannot be used: {str(exc).strip()}. Check that the server "
            "is running, that the database exists and that this user may create tables in it."
        )

    async def open(self, *, verify: bool = False) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                await self._migrate(conn)
        except psycopg.Error as exc:
            raise self._unusable(exc) from None
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self._conninfo,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            timeout=self._pool_timeout,
            # A connection the server dropped (a restart) is found and replaced before it is lent.
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=24 * 3600,
            open=False,
            name="callgrid",
        )
        await pool.open()
        self._pool = pool

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        known = migrations()
        async with conn.transaction():
            # Nodes starting together: one migrates, the others wait here, then find nothing to do.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"callgrid.migrate.{self.schema}",))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {int(r[0]) for r in await cur.fetchall()}
            newest = max((v for v, _, _ in known), default=0)
            if done and max(done) > newest:
                raise StoreUnusable(
                    f"The PostgreSQL store {redact(self.url)} (schema {self.schema}) was written by a newer callgrid "
                    f"(schema version {max(done)}; this one knows up to {newest}). Upgrade callgrid on this node."
                )
            for version, name, statements in known:
                if version in done:
                    continue
                for statement in statements:
                    await conn.execute(for_postgresql(statement, name).encode())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    async def own_leases(self, owner: str) -> bool:
        # A session lock on a connection of its own, held until close: the kernel's flock on the data
        # directory keeps two processes of one host from one name, this keeps two hosts (a data directory
        # copied into an image) from it. Should that connection break, the name is merely unguarded.
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc}") from None
        try:
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (f"callgrid.leases.{self.schema}.{owner}",)
            )
            row = await cur.fetchone()
        except psycopg.Error as exc:
            await conn.close()
            raise StoreUnavailable(f"the database connection was lost: {exc}") from None
        if not (row and row[0]):
            await conn.close()
            return False
        if self._owner_conn is not None:
            await self._owner_conn.close()
        self._owner_conn = conn
        return True

    async def close(self) -> None:
        if self._owner_conn is not None:
            await self._owner_conn.close()
            self._owner_conn = None
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listen_task
            self._listen_task = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------------ wake-ups across nodes

    def on_change(self, topic: str, action: Callable[[], None]) -> None:
        """Call `action` when any node commits a transaction that added work of `topic` ("delivery", "timer")
        or changed the event subscriptions ("subscriptions") or the Communication resources ("resources")."""
        self._listeners.setdefault(topic, []).append(action)
        if self._listen_task is None:
            self._listen_task = asyncio.get_running_loop().create_task(self._listen(), name="postgres-listen")

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = 0.1
                    # Anything notified while this connection was away is looked for now.
                    self._fire(set(self._listeners))
                    async for notice in conn.notifies():
                        self._fire(set(notice.payload.split(",")))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("PostgreSQL LISTEN connection lost (%s); reconnecting", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _fire(self, topics: set[str]) -> None:
        for topic in topics:
            for action in self._listeners.get(topic, ()):
                try:
                    action()
                except Exception:
                    _log.exception("a wake-up action failed")

    # ------------------------------------------------------------------ transactions

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        try:
            return await self._pool.getconn()
        except PoolTimeout:
            raise StoreUnavailable(
                f"no database connection became free within {self._pool_timeout:g} s (all {self._pool_size} busy)"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc}") from None

    async def peek_meta(self, key: str) -> str | None:
        # One statement on an autocommit connection: no BEGIN/COMMIT round trips, no row lock.
        conn = await self._getconn()
        try:
            cur = await conn.execute(b"SELECT value FROM meta WHERE key = %s", (key,))
            row = await cur.fetchone()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"the database connection was lost: {exc}") from None
        finally:
            assert self._pool is not None
            await self._pool.putconn(conn)
        return None if row is None else str(row[0])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        conn = await self._getconn()
        assert self._pool is not None
        tx = _PostgresTx(conn)
        try:
            try:
                async with conn.transaction():
                    yield tx
                    if tx.notify:
                        await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, ",".join(sorted(tx.notify))))
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                # A deadlock (or serialization failure): PostgreSQL rolled this transaction back; the
                # connection is fine. Not "connection lost": the caller may run the transaction again.
                raise StoreConflict(f"the transaction met a concurrent one and was rolled back: {exc}") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # The connection broke (server restarted, network): the transaction did not commit.
                raise StoreUnavailable(f"the database connection was lost: {exc}") from None
        finally:
            await self._pool.putconn(conn)
        tx.run_after_commit()


class _PostgresTx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._c = conn
        self._after_commit: list[Callable[[], None]] = []
        self.notify: set[str] = set()

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)

    def run_after_commit(self) -> None:
        for action in self._after_commit:
            try:
                action()
            except Exception:
                _log.exception("an after-commit action failed")

    async def _exec(self, query: str, args: tuple[Any, ...] | list[Any] = ()) -> psycopg.AsyncCursor[Any]:
        try:
            return await self._c.execute(query.encode(), args)  # type: ignore[arg-type]
        except psycopg.DataError as exc:
            raise _refused(exc) from None

    async def _one(self, query: str, *args: Any) -> tuple[Any, ...] | None:
        cur = await self._exec(query, args)
        row: tuple[Any, ...] | None = await cur.fetchone()
        return row

    async def _all(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        cur = await self._exec(query, args)
        return await cur.fetchall()

    async def _count(self, query: str, *args: Any) -> int:
        return (await self._exec(query, args)).rowcount

    async def _many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            async with self._c.cursor() as cur:
                try:
                    await cur.executemany(query.encode(), rows)  # type: ignore[arg-type]
                except psycopg.DataError as exc:
                    raise _refused(exc) from None

    async def _insert(self, table: str, columns: str, *args: Any) -> None:
        marks = ", ".join("%s" for _ in args)
        if await self._count(f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", *args) == 0:
            raise DuplicateKey(f"{table}: {args[0]} exists")

    async def _upsert_doc(self, table: str, key: str, key_value: str, doc: dict[str, Any]) -> None:
        await self._exec(
            f"INSERT INTO {table} ({key}, doc) VALUES (%s, %s) ON CONFLICT ({key}) DO UPDATE SET doc = excluded.doc",
            (key_value, _dumps(doc)),
        )

    async def _get_doc(self, table: str, key: str, key_value: str) -> dict[str, Any] | None:
        # FOR UPDATE: what is read here is usually written back in the same transaction.
        return _doc(await self._one(f"SELECT doc FROM {table} WHERE {key} = %s FOR UPDATE", key_value))

    # meta
    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key = %s FOR UPDATE", key)
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self._exec(
            "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def lock(self, name: str) -> None:
        await self._exec("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))

    # Communication resources
    async def put_resource(self, name: str, immutable_id: str, created_at: float, doc: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO communication_resources (name, immutable_id, created_at, doc) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            (name, immutable_id, created_at, _dumps(doc)),
        )
        # Every node holds the resources in memory (platform/resource.py): theirs is stale now.
        self.notify.add("resources")

    async def list_resources(self) -> list[dict[str, Any]]:
        rows = await self._all("SELECT doc FROM communication_resources ORDER BY created_at, name")
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_resource(self, name: str) -> bool:
        self.notify.add("resources")
        return await self._count("DELETE FROM communication_resources WHERE name = %s", name) > 0

    # identities
    async def add_identity(self, identity_id: str, created_at: float) -> None:
        await self._insert("identities", "id, created_at", identity_id, created_at)

    async def delete_identities_with_prefix(self, prefix: str) -> int:
        # No LIKE: '_' in the prefix would be a wildcard.
        return await self._count("DELETE FROM identities WHERE substr(id, 1, %s) = %s", len(prefix), prefix)

    async def get_identity(self, identity_id: str) -> dict[str, Any] | None:
        row = await self._one("SELECT id, created_at, tokens_revoked_at FROM identities WHERE id = %s", identity_id)
        if row is None:
            return None
        return {"id": row[0], "createdAt": row[1], "tokensRevokedAt": row[2]}

    async def list_identities(self, limit: int, prefix: str = "") -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT id, created_at, tokens_revoked_at FROM identities WHERE left(id, %s) = %s "
            "ORDER BY created_at DESC, id LIMIT %s",
            len(prefix),
            prefix,
            limit,
        )
        return [{"id": r[0], "createdAt": r[1], "tokensRevokedAt": r[2]} for r in rows]

    async def delete_identity(self, identity_id: str) -> bool:
        return await self._count("DELETE FROM identities WHERE id = %s", identity_id) > 0

    async def revoke_identity_tokens(self, identity_id: str, at: float) -> None:
        await self._exec("UPDATE identities SET tokens_revoked_at = %s WHERE id = %s", (at, identity_id))

    # phone numbers
    async def add_phone_number(self, number: str, doc: dict[str, Any], resource_id: str) -> None:
        await self._insert("phone_numbers", "number, doc, resource_id", number, _dumps(doc), resource_id)

    async def phone_number_owner(self, number: str) -> str | None:
        row = await self._one("SELECT resource_id FROM phone_numbers WHERE number = %s", number)
        return None if row is None else str(row[0])

    async def delete_phone_numbers_of(self, resource_id: str) -> int:
        return await self._count("DELETE FROM phone_numbers WHERE resource_id = %s", resource_id)

    async def get_phone_number(self, number: str) -> dict[str, Any] | None:
        return _doc(await self._one("SELECT doc FROM phone_numbers WHERE number = %s", number))

    async def list_phone_numbers(self, resource_id: str, skip: int, top: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT doc FROM phone_numbers WHERE resource_id = %s ORDER BY number LIMIT %s OFFSET %s",
            resource_id,
            top,
            skip,
        )
        return [jsonio.loads(r[0]) for r in rows]

    async def count_phone_numbers(self, resource_id: str) -> int:
        row = await self._one("SELECT COUNT(*) FROM phone_numbers WHERE resource_id = %s", resource_id)
        return int(row[0]) if row else 0

    async def delete_phone_number(self, number: str) -> bool:
        return await self._count("DELETE FROM phone_numbers WHERE number = %s", number) > 0

    # buying numbers
    async def put_number_search(self, search_id: str, doc: dict[str, Any]) -> None:
        await self._upsert_doc("number_searches", "id", search_id, doc)

    async def get_number_search(self, search_id: str) -> dict[str, Any] | None:
        return await self._get_doc("number_searches", "id", search_id)

    async def put_number_reservation(self, reservation_id: str, created_at: float, doc: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO number_reservations (id, created_at, doc) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (reservation_id, created_at, _dumps(doc)),
        )

    async def get_number_reservation(self, reservation_id: str) -> dict[str, Any] | None:
        return await self._get_doc("number_reservations", "id", reservation_id)

    async def list_number_reservations(self, skip: int, top: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT doc FROM number_reservations ORDER BY created_at, id LIMIT %s OFFSET %s", top, skip
        )
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_number_reservation(self, reservation_id: str) -> bool:
        return await self._count("DELETE FROM number_reservations WHERE id = %s", reservation_id) > 0

    async def put_number_operation(self, operation_id: str, doc: dict[str, Any]) -> None:
        await self._upsert_doc("number_operations", "id", operation_id, doc)

    async def get_number_operation(self, operation_id: str) -> dict[str, Any] | None:
        return await self._get_doc("number_operations", "id", operation_id)

    async def hold_numbers(self, numbers: list[str], holder: str, expires_at: float) -> None:
        await self._many(
            "INSERT INTO number_holds (number, holder, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (number) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            [(n, holder, expires_at) for n in numbers],
        )

    async def number_holders(self, numbers: list[str], now: float) -> dict[str, str]:
        # What is read here is then held (hold_numbers) in the same transaction: two searches on two
        # connections take turns, so that they never offer the same number (SQLite's are serial anyway).
        await self._exec("SELECT pg_advisory_xact_lock(hashtext('callgrid.number_holds'))")
        rows = await self._all(
            "SELECT number, holder FROM number_holds WHERE expires_at > %s AND number = ANY(%s)", now, numbers
        )
        return {r[0]: r[1] for r in rows}

    async def release_holds(self, holder: str, numbers: list[str] | None = None) -> None:
        if numbers is None:
            await self._exec("DELETE FROM number_holds WHERE holder = %s", (holder,))
            return
        await self._exec("DELETE FROM number_holds WHERE holder = %s AND number = ANY(%s)", (holder, numbers))

    # endpoints
    async def put_endpoint(self, raw_id: str, doc: dict[str, Any]) -> None:
        await self._upsert_doc("endpoints", "raw_id", raw_id, doc)

    async def get_endpoint(self, raw_id: str) -> dict[str, Any] | None:
        return _doc(await self._one("SELECT doc FROM endpoints WHERE raw_id = %s", raw_id))

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return [jsonio.loads(r[0]) for r in await self._all("SELECT doc FROM endpoints ORDER BY raw_id")]

    # calls
    async def put_call(self, server_call_id: str, doc: dict[str, Any], updated_at: float) -> None:
        await self._exec(
            "INSERT INTO calls (server_call_id, doc, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (server_call_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            (server_call_id, _dumps(doc), updated_at),
        )

    async def get_call(self, server_call_id: str) -> dict[str, Any] | None:
        return await self._get_doc("calls", "server_call_id", server_call_id)

    async def list_calls(self, limit: int, resource_ids: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        if resource_ids is None:
            rows = await self._all("SELECT doc FROM calls ORDER BY updated_at DESC LIMIT %s", limit)
        else:
            rows = await self._all(
                "SELECT doc FROM calls WHERE COALESCE(doc::jsonb ->> 'resource_id', '') = ANY(%s) "
                "ORDER BY updated_at DESC LIMIT %s",
                list(resource_ids),
                limit,
            )
        return [jsonio.loads(r[0]) for r in rows]

    async def add_call_connection(self, call_connection_id: str, server_call_id: str) -> None:
        await self._insert("call_connections", "call_connection_id, server_call_id", call_connection_id, server_call_id)

    async def get_call_id_for_connection(self, call_connection_id: str) -> str | None:
        row = await self._one(
            "SELECT server_call_id FROM call_connections WHERE call_connection_id = %s", call_connection_id
        )
        return None if row is None else str(row[0])

    # repeatable requests
    async def get_repeatable(self, request_id: str, now: float) -> dict[str, Any] | None:
        # Copies of one request racing each other (on one node or several) take turns from here to their
        # commit: a row that does not exist yet cannot be locked, its key can. The second copy then reads
        # the answer the first stored, as on SQLite, whose transactions are serial.
        await self._exec("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"callgrid.repeatable:{request_id}",))
        await self._exec("DELETE FROM repeatable_requests WHERE expires_at <= %s", (now,))
        row = await self._one(
            "SELECT fingerprint, status, response FROM repeatable_requests WHERE request_id = %s FOR UPDATE",
            request_id,
        )
        if row is None:
            return None
        return {"fingerprint": row[0], "status": row[1], "response": None if row[2] is None else jsonio.loads(row[2])}

    async def put_repeatable(self, request_id: str, doc: dict[str, Any], now: float, expires_at: float) -> None:
        response = doc.get("response")
        await self._exec(
            "INSERT INTO repeatable_requests (request_id, fingerprint, status, response, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, "
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
        await self._exec("DELETE FROM repeatable_requests WHERE request_id = %s", (request_id,))

    # recordings
    async def put_recording(self, recording_id: str, server_call_id: str, doc: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO recordings (id, server_call_id, doc) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (recording_id, server_call_id, _dumps(doc)),
        )

    async def get_recording(self, recording_id: str) -> dict[str, Any] | None:
        return await self._get_doc("recordings", "id", recording_id)

    # timers
    async def add_timer(self, timer: TimerRow) -> None:
        await self._insert(
            "timers", "id, due_at, kind, payload", timer.id, timer.due_at, timer.kind, _dumps(timer.payload)
        )
        self.notify.add("timer")

    async def due_timers(self, now: float, limit: int) -> list[TimerRow]:
        # SKIP LOCKED: a timer another node is firing (its transaction holds the row) is not fired again.
        rows = await self._all(
            "SELECT id, due_at, kind, payload FROM timers WHERE due_at <= %s ORDER BY due_at LIMIT %s "
            "FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [TimerRow(r[0], r[1], r[2], jsonio.loads(r[3])) for r in rows]

    async def delete_timer(self, timer_id: str) -> None:
        await self._exec("DELETE FROM timers WHERE id = %s", (timer_id,))

    async def next_timer_due(self) -> float | None:
        row = await self._one("SELECT MIN(due_at) FROM timers")
        return None if row is None or row[0] is None else float(row[0])

    # subscriptions
    async def put_subscription(self, sub_id: str, doc: dict[str, Any]) -> None:
        await self._upsert_doc("event_subscriptions", "id", sub_id, doc)
        # Every node keeps a compiled index of the subscriptions: theirs is stale now.
        self.notify.add("subscriptions")

    async def get_subscription(self, sub_id: str) -> dict[str, Any] | None:
        return await self._get_doc("event_subscriptions", "id", sub_id)

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        rows = await self._all("SELECT doc FROM event_subscriptions ORDER BY id")
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_subscription(self, sub_id: str) -> bool:
        deleted = await self._count("DELETE FROM event_subscriptions WHERE id = %s", sub_id) > 0
        self.notify.add("subscriptions")
        await self._exec(
            "INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value) "
            "SELECT lower(e.topic), d.subscription_id, 'DroppedEventCount', 'SubscriptionDeleted', COUNT(*) "
            "FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.subscription_id = %s AND d.status = 'pending' GROUP BY lower(e.topic), d.subscription_id "
            "ON CONFLICT (topic, subscription_id, metric, label) "
            "DO UPDATE SET value = eventgrid_metrics.value + excluded.value",
            (sub_id,),
        )
        await self._exec(
            "UPDATE deliveries SET status = 'dropped', last_outcome = 'SubscriptionDeleted', "
            "reason = 'SubscriptionDeleted', lease_until = NULL "
            "WHERE subscription_id = %s AND status = 'pending'",
            (sub_id,),
        )
        return deleted

    # Event Grid topics
    async def put_topic(self, topic_id: str, kind: str, name: str, doc: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO eventgrid_topics (id, kind, name, doc) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (topic_id, kind, name.lower(), _dumps(doc)),
        )

    async def get_topic(self, topic_id: str) -> dict[str, Any] | None:
        return await self._get_doc("eventgrid_topics", "id", topic_id)

    async def find_topic_by_name(self, kind: str, name: str) -> dict[str, Any] | None:
        query = "SELECT doc FROM eventgrid_topics WHERE kind = %s AND name = %s"
        return _doc(await self._one(query, kind, name.lower()))

    async def list_topics(self, kind: str) -> list[dict[str, Any]]:
        rows = await self._all("SELECT doc FROM eventgrid_topics WHERE kind = %s ORDER BY id", kind)
        return [jsonio.loads(r[0]) for r in rows]

    async def delete_topic(self, topic_id: str) -> bool:
        return await self._count("DELETE FROM eventgrid_topics WHERE id = %s", topic_id) > 0

    # outbox
    async def add_event(self, event_id: str, topic: str, body: str, created_at: float) -> None:
        await self._insert("events", "id, topic, body, created_at", event_id, topic, body, created_at)

    async def add_delivery(self, row: DeliveryRow, owner: str = "") -> None:
        values = _values(row, _DELIVERY_COLUMNS)
        if row.lease_until is None:
            await self._insert("deliveries", _DELIVERY_COLUMN_LIST, *values)
            self.notify.add("delivery")
            return
        # Leased in `owner`'s name, out of the due range until the lease ends (as claim_deliveries leaves a
        # row): no other node may send it before then, so none is woken for it.
        values = (*values[:_NEXT_ATTEMPT], row.lease_until, *values[_NEXT_ATTEMPT + 1 :], _owner_key(owner))
        await self._insert("deliveries", _DELIVERY_COLUMN_LIST + ", lease_owner", *values)

    async def claim_deliveries(
        self, now: float, limit: int, lease_until: float, owner: str = ""
    ) -> list[tuple[DeliveryRow, str]]:
        # One round trip: lock due rows no other node holds, lease them in `owner`'s name (next_attempt_at
        # moves to the lease's end, out of the due range), and return them as they were, with their bodies.
        cols = ", ".join("c." + c if c != "next_attempt_at" else "due.was" for c in _DELIVERY_COLUMNS)
        rows = await self._all(
            "WITH due AS (SELECT id, next_attempt_at AS was, rowid FROM deliveries "
            "WHERE status = 'pending' AND next_attempt_at <= %s AND (lease_until IS NULL OR lease_until <= %s) "
            "ORDER BY next_attempt_at, rowid LIMIT %s FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE deliveries d SET lease_until = %s, next_attempt_at = %s, lease_owner = %s FROM due "
            "WHERE d.id = due.id RETURNING d.*) "
            f"SELECT {cols}, e.body FROM claimed c JOIN due ON due.id = c.id JOIN events e ON e.id = c.event_id "
            "ORDER BY due.was, due.rowid",
            now,
            now,
            limit,
            lease_until,
            lease_until,
            _owner_key(owner),
        )
        return [(DeliveryRow(*r[:-1]), str(r[-1])) for r in rows]

    async def finish_attempt(self, row: DeliveryRow) -> None:
        await self._exec(_DELIVERY_PROGRESS_SQL, (*_values(row, _DELIVERY_PROGRESS), row.id))

    async def next_delivery_due(self, now: float) -> float | None:
        row = await self._one("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def list_deliveries(self, limit: int, subscription_id: str | None = None) -> list[DeliveryRow]:
        return await self.list_deliveries_by(limit, subscription_id=subscription_id)

    async def release_leases(self, owner: str = "") -> None:
        # Other nodes may be sending what they leased: a starting node takes back only what it leased itself
        # in a previous life (its owner name, which `own_leases` keeps from any other live process). Another
        # dead node's leases run out (lease_until) and its rows fall due again by themselves.
        if not owner:
            return
        await self._exec(
            "UPDATE deliveries SET lease_until = NULL, next_attempt_at = COALESCE(last_attempt_at, created_at) "
            "WHERE lease_owner = %s AND status = 'pending' AND lease_until IS NOT NULL",
            (_owner_key(owner),),
        )

    # delivery engine (bulk)
    async def finish_attempts(self, rows: list[DeliveryRow], attempts: list[AttemptRow]) -> None:
        await self._many(_DELIVERY_PROGRESS_SQL, [(*_values(r, _DELIVERY_PROGRESS), r.id) for r in rows])
        await self._many(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, status, outcome, error, "
            "duration_ms, batch_size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (delivery_id, attempt) DO UPDATE SET started_at = excluded.started_at, "
            "status = excluded.status, outcome = excluded.outcome, error = excluded.error, "
            "duration_ms = excluded.duration_ms, batch_size = excluded.batch_size",
            [_values(a, _ATTEMPT_COLUMNS) for a in attempts],
        )

    async def settle_late_answer(self, attempts: list[tuple[str, int]], status: int, note: str, now: float) -> set[str]:
        settled: set[str] = set()
        for delivery_id, attempt in attempts:
            changed = await self._count(
                "UPDATE deliveries SET status = 'delivered', last_status = %s, last_outcome = 'Succeeded', "
                "last_error = %s, reason = NULL WHERE id = %s AND status = 'pending' AND attempts = %s "
                "AND (lease_until IS NULL OR lease_until <= %s)",
                status,
                note,
                delivery_id,
                attempt,
                now,
            )
            if changed:
                settled.add(delivery_id)
                await self._exec(
                    "UPDATE delivery_attempts SET status = %s, error = %s WHERE delivery_id = %s AND attempt = %s",
                    (status, note, delivery_id, attempt),
                )
        return settled

    async def list_attempts(self, delivery_ids: list[str]) -> dict[str, list[AttemptRow]]:
        found: dict[str, list[AttemptRow]] = {i: [] for i in delivery_ids}
        rows = await self._all(
            "SELECT delivery_id, attempt, started_at, status, outcome, error, duration_ms, batch_size "
            "FROM delivery_attempts WHERE delivery_id = ANY(%s) ORDER BY delivery_id, attempt",
            delivery_ids,
        )
        for r in rows:
            found[r[0]].append(AttemptRow(*r))
        return found

    async def list_deliveries_by(
        self, limit: int, *, subscription_id: str | None = None, status: str | None = None
    ) -> list[DeliveryRow]:
        where, args = [], []
        if subscription_id is not None:
            where.append("subscription_id = %s")
            args.append(subscription_id)
        if status is not None:
            where.append("status = %s")
            args.append(status)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self._all(
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries {clause}ORDER BY created_at DESC, id LIMIT %s",
            *args,
            limit,
        )
        return [DeliveryRow(*r) for r in rows]

    async def add_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        await self._many(
            f"INSERT INTO dead_letters ({', '.join(_DEAD_LETTER_COLUMNS)}) "
            f"VALUES ({', '.join('%s' for _ in _DEAD_LETTER_COLUMNS)})",
            [_dead_letter_values(r) for r in rows],
        )

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRow | None:
        row = await self._one(
            f"SELECT {', '.join(_DEAD_LETTER_COLUMNS)} FROM dead_letters WHERE id = %s FOR UPDATE", dead_letter_id
        )
        return None if row is None else _dead_letter(row)

    async def list_dead_letters(self, limit: int, subscription_id: str | None = None) -> list[DeadLetterRow]:
        cols = ", ".join(_DEAD_LETTER_COLUMNS)
        if subscription_id is None:
            rows = await self._all(f"SELECT {cols} FROM dead_letters ORDER BY created_at DESC, id LIMIT %s", limit)
        else:
            rows = await self._all(
                f"SELECT {cols} FROM dead_letters WHERE subscription_id = %s ORDER BY created_at DESC, id LIMIT %s",
                subscription_id,
                limit,
            )
        return [_dead_letter(r) for r in rows]

    async def due_dead_letter_writes(self, now: float, limit: int) -> list[DeadLetterRow]:
        # Leased like deliveries: the blob is written outside this transaction, so the rows move out of
        # the due range for a while (another node leaves them be; if this one dies they fall due again).
        rows = await self._all(
            "WITH due AS (SELECT id FROM dead_letters WHERE write_status = 'pending' AND write_due_at <= %s "
            "ORDER BY write_due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE dead_letters d SET write_due_at = %s FROM due WHERE d.id = due.id "
            f"RETURNING {', '.join('d.' + c for c in _DEAD_LETTER_COLUMNS)}",
            now,
            limit,
            now + _DEAD_LETTER_WRITE_LEASE_SECONDS,
        )
        return sorted((_dead_letter(r) for r in rows), key=lambda r: (r.created_at, r.id))

    async def next_dead_letter_write_due(self) -> float | None:
        row = await self._one("SELECT MIN(write_due_at) FROM dead_letters WHERE write_status = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def update_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        assignments = ", ".join(f"{c} = %s" for c in _DEAD_LETTER_COLUMNS[1:])
        await self._many(
            f"UPDATE dead_letters SET {assignments} WHERE id = %s",
            [(*_dead_letter_values(r)[1:], r.id) for r in rows],
        )

    async def add_metric_counts(self, counts: list[tuple[str, str, str, str, float]]) -> None:
        # Sorted: two nodes adding to the same counters lock them in one order (no deadlock).
        await self._many(
            "INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (topic, subscription_id, metric, label) "
            "DO UPDATE SET value = eventgrid_metrics.value + excluded.value",
            sorted(counts),
        )

    async def metric_counts(self) -> list[tuple[str, str, str, str, float]]:
        rows = await self._all("SELECT topic, subscription_id, metric, label, value FROM eventgrid_metrics")
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]

    async def purge_ended_deliveries(self, ended_before: float, limit: int) -> int:
        rows = await self._all(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
            "WHERE status IN ('delivered', 'dropped') AND next_attempt_at < %s LIMIT %s FOR UPDATE SKIP LOCKED) "
            "RETURNING id, event_id",
            ended_before,
            limit,
        )
        if not rows:
            return 0
        await self._exec("DELETE FROM delivery_attempts WHERE delivery_id = ANY(%s)", ([r[0] for r in rows],))
        await self._exec(
            "DELETE FROM events WHERE id = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = events.id) "
            "AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE event_id = events.id)",
            (list({r[1] for r in rows}),),
        )
        return len(rows)

    async def reset(self) -> None:
        # DELETE, not TRUNCATE: TRUNCATE takes each table's ACCESS EXCLUSIVE lock in turn and deadlocked with
        # transactions writing to those tables meanwhile (the delivery engine's, another node's).
        for table in STATE_TABLES:
            await self._exec(f"DELETE FROM {table}")
        self.notify.update(("subscriptions", "resources"))
