"""The router's store on PostgreSQL: several `router serve` behind one webhook URL give the same answers.

Everything the router keeps is shared: assignments, rules, the block list, its secrets (so each instance
accepts the same webhook URL and API key) and the decision log, whose primary key (the event id) makes a
redelivery that reaches the other instance a duplicate too. The queries are `RouterStore`'s own, in the
dialect both databases speak; this module gives them a pooled connection and PostgreSQL's tables.

URL: `postgresql://user:password@host:port/database?schema=NAME`. The schema (default `callgrid_router`,
created if missing) keeps the router's tables apart from callgrid's own when both use one database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from callgrid.router.store import SCHEMA, Connection, Cursor, RouterStore
from callgrid.sql_dialect import for_postgresql

DEFAULT_SCHEMA = "callgrid_router"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# RouterStore's schema (router/store.py), each version translated as the main store's migrations are
# (callgrid/sql_dialect.py): one source for both databases. tests/router/test_postgresql_store.py
# compares the tables, columns, keys and indexes both build.
_SCHEMA = [
    [for_postgresql(statement, f"router schema {number}") for statement in script.split(";") if statement.strip()]
    for number, script in enumerate(SCHEMA, start=1)
]


def redact(url: str) -> str:
    """The URL without its password, for a banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class _PgConnection:
    """A psycopg connection speaking the `?` placeholders the router's queries are written with."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, parameters: Sequence[Any] = (), /) -> Cursor:
        # None of the router's queries holds a literal '?' or '%'.
        cur: Cursor = self._conn.execute(query.replace("?", "%s").encode(), tuple(parameters))  # type: ignore[arg-type]
        return cur


class PostgresRouterStore(RouterStore):
    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.schema = query.pop("schema", DEFAULT_SCHEMA)
        if not _SCHEMA_NAME.match(self.schema):
            raise ValueError(f"schema '{self.schema}' in the router's store URL: use letters, digits and _")
        base = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
        given = conninfo_to_dict(base)
        self._conninfo = make_conninfo(
            base,
            options=f"{given.get('options') or ''} -c search_path={self.schema}".strip(),
            connect_timeout=given.get("connect_timeout") or 10,
        )
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                self._migrate_pg(conn)
        except psycopg.Error as exc:
            raise ValueError(f"the router's store {self.location} cannot be used: {str(exc).strip()}") from None
        self._pool: ConnectionPool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            timeout=10,
            # A connection the server dropped (a restart) is found and replaced before it is lent.
            check=ConnectionPool.check_connection,
            open=True,
            name="callgrid-router",
        )

    @property
    def location(self) -> str:
        return f"{redact(self.url)} (schema {self.schema})"

    def _migrate_pg(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Routers starting together: one migrates, the others wait here, then find nothing to do.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"callgrid.router.migrate.{self.schema}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > len(_SCHEMA):
                raise ValueError(
                    f"the router's store {self.location} was written by a newer callgrid (schema version {version})"
                )
            for number, statements in enumerate(_SCHEMA[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

    def close(self) -> None:
        self._pool.close()

    def start_checkpoints(self, interval: float = 0.2) -> None:
        return None  # SQLite's WAL only

    def stop_checkpoints(self) -> None:
        return None

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._pool.connection() as conn, conn.transaction():
            yield _PgConnection(conn)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._pool.connection() as conn:
            yield _PgConnection(conn)
