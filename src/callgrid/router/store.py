"""The router's own store: assignments, rules, block list, and the durable decision log. SQLite here;
PostgreSQL (router/postgresql.py, the same queries) when several routers share it.

One connection per process; WAL so the CLI can edit assignments while `router serve` runs. Every write is
one `BEGIN IMMEDIATE` transaction. An IncomingCall is written (state `pending`, with what is needed to act
on it) before the webhook acknowledges it, so a crash between the acknowledgement and the SDK call is
resumed at the next start instead of being lost; the event id is the primary key, so a redelivery is
recognised as a duplicate and never acted on twice.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from callgrid.router.models import (
    ActionRecord,
    Assignment,
    DecisionRecord,
    IncomingCall,
    Rules,
    Unassigned,
)


@dataclass(frozen=True)
class Lookup:
    """One call's view of the store (`RouterStore.lookup`); answers routing's questions for that call."""

    assigned: Assignment | None
    blocked: bool
    rules: Rules

    def assignment(self, phone_number: str) -> Assignment | None:
        return self.assigned if self.assigned is not None and self.assigned.phone_number == phone_number else None

    def is_blocked(self, callers: list[str]) -> bool:
        return self.blocked  # for the callers the lookup was made with (routing.blocking_keys)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the queries below need of a connection: sqlite3's, or router/postgresql.py's stand-in."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...


# The router's tables, one script per version, in the part of SQLite's dialect that callgrid/sql_dialect.py's
# `for_postgresql` translates: router/postgresql.py builds PostgreSQL's tables from these same scripts.
SCHEMA = [
    # 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE assignments (
        phone_number TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        display_name TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX assignments_by_identity ON assignments (identity);
    CREATE TABLE blocked_callers (caller TEXT PRIMARY KEY, note TEXT, created_at REAL NOT NULL);
    CREATE TABLE decisions (
        event_id TEXT PRIMARY KEY,
        received_at REAL NOT NULL,
        event_time TEXT NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        server_call_id TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        incoming_call_context TEXT,
        first_sent REAL NOT NULL,
        state TEXT NOT NULL,
        rule TEXT,
        outcome TEXT,
        deliveries INTEGER NOT NULL DEFAULT 1,
        finished_at REAL
    );
    CREATE INDEX decisions_by_time ON decisions (received_at);
    CREATE INDEX decisions_pending ON decisions (state) WHERE state = 'pending';
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL REFERENCES decisions (event_id),
        at REAL NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        reason TEXT,
        ok INTEGER NOT NULL,
        status INTEGER,
        error_code TEXT,
        error_message TEXT,
        elapsed_ms REAL NOT NULL
    );
    CREATE INDEX actions_by_event ON actions (event_id);
    CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        received_at REAL NOT NULL,
        type TEXT NOT NULL,
        call_connection_id TEXT,
        correlation_id TEXT,
        payload TEXT NOT NULL
    );
    """,
]


# The WAL starts over once it holds this many frames (pages); SQLite's own checkpoint only past the larger.
_RESTART_FRAMES = 500
_AUTOCHECKPOINT_PAGES = 20_000


class _Checkpoints(threading.Thread):
    """PASSIVE checkpoints beside the writer; when the WAL has grown, one more pass holding the store's
    lock, so that it completes and the next commit starts the WAL over (commits that keep overtaking a
    checkpoint never let it restart)."""

    def __init__(self, path: Path, lock: threading.RLock, interval: float) -> None:
        super().__init__(name="router-checkpoints", daemon=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._lock = lock
        self._interval = interval
        self._stopped = threading.Event()

    def _checkpoint(self) -> int:
        # fetchall: a statement left open would keep a read mark, and the WAL could never restart.
        ((busy, frames, _copied),) = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return 0 if busy else int(frames)

    def run(self) -> None:
        try:
            while not self._stopped.wait(self._interval):
                try:
                    if self._checkpoint() >= _RESTART_FRAMES:
                        with self._lock:
                            self._checkpoint()
                except sqlite3.Error:
                    continue  # nothing is lost meanwhile: the WAL holds every commit
        finally:
            self._conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)


class _Locked:
    """The connection, under the store's lock (a class, not @contextmanager: three of these per routed call,
    and a generator-based manager costs several times more to enter and leave)."""

    __slots__ = ("_conn", "_lock")

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        return self._conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()


class _Transaction(_Locked):
    """One `BEGIN IMMEDIATE` transaction under the lock: rolled back if its body raises, else committed."""

    __slots__ = ()

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._conn.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()


class RouterStore:
    _rules_cache: tuple[str | None, Rules] | None = None

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._checkpoints: _Checkpoints | None = None
        self._conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a process crash (what at-least-once needs here); FULL adds an fsync per commit.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @property
    def location(self) -> str:
        """Where the router's state lives, for a banner."""
        return str(self.path.resolve())

    def close(self) -> None:
        self.stop_checkpoints()
        with self._lock:
            self._conn.close()

    def start_checkpoints(self, interval: float = 0.2) -> None:
        """For a long-running server: WAL checkpoints on a thread of their own. SQLite's automatic one
        runs inside whichever commit crosses the limit, copying megabytes and syncing the file while the
        event loop waits for that commit; the automatic one stays as a backstop, far above."""
        if self._checkpoints is None and str(self.path) != ":memory:":
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            self._checkpoints = _Checkpoints(self.path, self._lock, interval)
            self._checkpoints.start()

    def stop_checkpoints(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
            self._checkpoints = None

    def _tx(self) -> AbstractContextManager[Connection]:
        return _Transaction(self._conn, self._lock)

    def _read(self) -> AbstractContextManager[Connection]:
        return _Locked(self._conn, self._lock)

    def _migrate(self) -> None:
        with self._tx() as c:
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            for number, script in enumerate(SCHEMA[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version={number}")

    # ---- meta: secrets, rules, remembered settings ---------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                (key, value, value),
            )

    def secret(self, key: str) -> str:
        """A random secret, generated once and kept (the webhook secret, the API key); routers starting
        together on one shared store keep the one that was written first."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, secrets.token_urlsafe(24)),
            )
            return str(c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def rules(self) -> Rules:
        return self._parse_rules(self.meta("rules"))

    def _parse_rules(self, raw: str | None) -> Rules:
        # Parsed again only when the stored text changes (the CLI or another router may change it any time).
        cached = self._rules_cache
        if cached is not None and cached[0] == raw:
            return cached[1]
        if raw is None:
            rules = Rules()
        else:
            doc = json.loads(raw)
            rules = Rules(unassigned=Unassigned(doc["unassigned"]), fallback=doc.get("fallback"))
        self._rules_cache = (raw, rules)
        return rules

    def set_rules(self, rules: Rules) -> None:
        self.set_meta("rules", json.dumps(rules.view()))

    def lookup(self, number: str | None, callers: Sequence[str]) -> Lookup:
        """What routing a call needs from the store, read in one statement: the callee number's assignment,
        whether a caller is blocked, and the rules (three reads per call before)."""
        if number is None:
            return Lookup(None, False, self.rules())
        first, second = [*callers, "", ""][:2]
        with self._read() as c:
            row = c.execute(
                "SELECT a.identity, a.display_name, "
                "EXISTS (SELECT 1 FROM blocked_callers WHERE caller IN (?, ?)), "
                "(SELECT value FROM meta WHERE key = 'rules') "
                "FROM (SELECT 1 AS one) AS one LEFT JOIN assignments AS a ON a.phone_number = ?",
                (first, second, number),
            ).fetchone()
        assignment = None if row[0] is None else Assignment(number, row[0], row[1])
        return Lookup(assignment, bool(row[2]), self._parse_rules(row[3]))

    # ---- assignments ---------------------------------------------------------------------------------

    def assign(self, a: Assignment) -> bool:
        """Store an assignment; True when the number was not assigned before."""
        with self._tx() as c:
            existed = c.execute("SELECT 1 FROM assignments WHERE phone_number = ?", (a.phone_number,)).fetchone()
            self._upsert(c, a)
        return existed is None

    def import_assignments(self, rows: Sequence[Assignment]) -> tuple[int, int, int]:
        """Upsert many in one transaction: (created, updated, unchanged)."""
        created = updated = unchanged = 0
        with self._tx() as c:
            for a in rows:
                old = c.execute(
                    "SELECT identity, display_name FROM assignments WHERE phone_number = ?", (a.phone_number,)
                ).fetchone()
                if old is None:
                    created += 1
                elif (old[0], old[1]) == (a.identity, a.display_name):
                    unchanged += 1
                    continue
                else:
                    updated += 1
                self._upsert(c, a)
        return created, updated, unchanged

    @staticmethod
    def _upsert(c: Connection, a: Assignment) -> None:
        c.execute(
            "INSERT INTO assignments (phone_number, identity, display_name, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (phone_number) DO UPDATE SET identity = excluded.identity, "
            "display_name = excluded.display_name, updated_at = excluded.updated_at",
            (a.phone_number, a.identity, a.display_name, time.time()),
        )

    def unassign(self, phone_number: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM assignments WHERE phone_number = ?", (phone_number,)).rowcount > 0

    def assignment(self, phone_number: str) -> Assignment | None:
        with self._read() as c:
            row = c.execute(
                "SELECT phone_number, identity, display_name FROM assignments WHERE phone_number = ?", (phone_number,)
            ).fetchone()
        return None if row is None else Assignment(row[0], row[1], row[2])

    def assignments(self, *, after: str = "", limit: int = 1000, identity: str | None = None) -> list[Assignment]:
        """A page in number order: pass the last number seen as `after` for the next one."""
        sql = "SELECT phone_number, identity, display_name FROM assignments WHERE phone_number > ?"
        args: list[object] = [after]
        if identity is not None:
            sql += " AND identity = ?"
            args.append(identity)
        sql += " ORDER BY phone_number LIMIT ?"
        args.append(limit)
        with self._read() as c:
            return [Assignment(r[0], r[1], r[2]) for r in c.execute(sql, args)]

    def assigned_numbers(self) -> list[str]:
        with self._read() as c:
            return [r[0] for r in c.execute("SELECT phone_number FROM assignments ORDER BY phone_number")]

    def count_assignments(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT count(*) FROM assignments").fetchone()[0])

    # ---- block list ----------------------------------------------------------------------------------

    def block(self, caller: str, note: str | None = None) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO blocked_callers (caller, note, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (caller, note, time.time()),
            )
            return cur.rowcount > 0

    def unblock(self, caller: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM blocked_callers WHERE caller = ?", (caller,)).rowcount > 0

    def blocked(self) -> list[tuple[str, str | None]]:
        with self._read() as c:
            return [(r[0], r[1]) for r in c.execute("SELECT caller, note FROM blocked_callers ORDER BY caller")]

    def is_blocked(self, callers: Iterable[str]) -> bool:
        keys = [c for c in callers if c]
        if not keys:
            return False
        marks = ",".join("?" * len(keys))
        with self._read() as c:
            row = c.execute(f"SELECT 1 FROM blocked_callers WHERE caller IN ({marks}) LIMIT 1", keys).fetchone()
        return row is not None

    # ---- the decision log ----------------------------------------------------------------------------

    def accept(self, calls: Sequence[IncomingCall]) -> tuple[list[IncomingCall], float]:
        """Record incoming events durably; return the ones never seen before (duplicates are counted only)
        and the time they were first accepted (the repeatability timestamp of their SDK calls)."""
        fresh: list[IncomingCall] = []
        now = time.time()
        with self._tx() as c:
            for call in calls:
                cur = c.execute(
                    "INSERT INTO decisions (event_id, received_at, event_time, caller, callee, server_call_id, "
                    "correlation_id, incoming_call_context, first_sent, state) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT (event_id) DO NOTHING",
                    (
                        call.event_id,
                        now,
                        call.event_time,
                        call.caller,
                        call.callee,
                        call.server_call_id,
                        call.correlation_id,
                        call.incoming_call_context,
                        now,
                    ),
                )
                if cur.rowcount:
                    fresh.append(call)
                else:
                    c.execute("UPDATE decisions SET deliveries = deliveries + 1 WHERE event_id = ?", (call.event_id,))
        return fresh, now

    def pending(self) -> list[tuple[IncomingCall, float]]:
        """Events accepted but not finished (the process stopped in between): resumed at start."""
        with self._read() as c:
            rows = c.execute(
                "SELECT event_id, caller, callee, incoming_call_context, server_call_id, correlation_id, event_time, "
                "first_sent FROM decisions WHERE state = 'pending' ORDER BY received_at"
            ).fetchall()
        return [(IncomingCall(r[0], r[1], r[2], r[3] or "", r[4], r[5], r[6]), float(r[7])) for r in rows]

    @staticmethod
    def _insert_action(c: Connection, event_id: str, a: ActionRecord) -> None:
        c.execute(
            "INSERT INTO actions (event_id, at, action, target, reason, ok, status, error_code, error_message, "
            "elapsed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                a.at,
                a.action,
                a.target,
                a.reason,
                int(a.ok),
                a.status,
                a.error_code,
                a.error_message,
                a.elapsed_ms,
            ),
        )

    def finish(self, event_id: str, rule: str, outcome: str, actions: Sequence[ActionRecord] = ()) -> None:
        """The decision and its SDK calls in one commit (a crash before it resumes the event, with the same
        repeatability ids, so ACS sees the same requests again)."""
        # The context is a bearer capability for the call; it has no use once the router has acted.
        with self._tx() as c:
            for a in actions:
                self._insert_action(c, event_id, a)
            c.execute(
                "UPDATE decisions SET state = 'done', rule = ?, outcome = ?, finished_at = ?, "
                "incoming_call_context = NULL WHERE event_id = ?",
                (rule, outcome, time.time(), event_id),
            )

    def decisions(
        self, *, limit: int = 50, event_id: str | None = None, server_call_id: str | None = None
    ) -> list[DecisionRecord]:
        """Newest first, each with its SDK calls in order."""
        sql = (
            "SELECT event_id, received_at, caller, callee, server_call_id, correlation_id, state, rule, outcome, "
            "deliveries, finished_at FROM decisions"
        )
        args: list[object] = []
        if event_id is not None:
            sql += " WHERE event_id = ?"
            args.append(event_id)
        elif server_call_id is not None:
            sql += " WHERE server_call_id = ?"
            args.append(server_call_id)
        sql += " ORDER BY received_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
            out = [DecisionRecord(*tuple(r)) for r in rows]
            for d in out:
                d.actions = [
                    ActionRecord(
                        action=a[0],
                        target=a[1],
                        reason=a[2],
                        ok=bool(a[3]),
                        status=a[4],
                        error_code=a[5],
                        error_message=a[6],
                        elapsed_ms=a[7],
                        at=a[8],
                    )
                    for a in c.execute(
                        "SELECT action, target, reason, ok, status, error_code, error_message, elapsed_ms, at "
                        "FROM actions WHERE event_id = ? ORDER BY id",
                        (d.event_id,),
                    )
                ]
        return out

    # ---- Call Automation callbacks (only when something answered with the router's callback URL) -------

    def record_callback(
        self, event_id: str, event_type: str, connection: str | None, correlation: str | None, payload: str
    ) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO callbacks (id, received_at, type, call_connection_id, correlation_id, payload) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (event_id, time.time(), event_type, connection, correlation, payload),
            )
            return cur.rowcount > 0

    def callbacks(self, limit: int = 50) -> list[dict[str, object]]:
        with self._read() as c:
            rows = c.execute(
                "SELECT id, received_at, type, call_connection_id, correlation_id FROM callbacks "
                "ORDER BY received_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {"id": r[0], "receivedAt": r[1], "type": r[2], "callConnectionId": r[3], "correlationId": r[4]}
            for r in rows
        ]


def open_router_store(location: str | Path) -> RouterStore:
    """The router's store at `location`: a `postgresql://` URL (several routers share it), `sqlite:///path`
    or a file path."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            # Imported only when used: a SQLite user needs no PostgreSQL driver.
            from callgrid.router.postgresql import PostgresRouterStore
        except ImportError as exc:
            raise ValueError(f"a PostgreSQL store needs psycopg ({exc}): pip install 'callgrid[postgresql]'") from None
        return PostgresRouterStore(text)
    return RouterStore(text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else text)
