"""Which store a test server uses: SQLite in its data directory (the default), or PostgreSQL in a schema
of its own, so that tests (and test processes) sharing one database never see each other's state.

`CALLGRID_TEST_STORE=postgresql` makes every server the plugin starts use PostgreSQL at
`CALLGRID_TEST_POSTGRES_URL` (default `postgresql://postgres@127.0.0.1:5432/test`): how CI runs the
suite a second time on PostgreSQL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("CALLGRID_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def store_kind() -> str:
    """ "sqlite" or "postgresql", from CALLGRID_TEST_STORE."""
    kind = (os.environ.get("CALLGRID_TEST_STORE") or "sqlite").lower()
    if kind in ("postgres", "pg"):
        kind = "postgresql"
    if kind not in ("sqlite", "postgresql"):
        raise ValueError(f"CALLGRID_TEST_STORE={kind}: use sqlite or postgresql")
    return kind


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["schema"] = schema
    return urlunsplit(parts._replace(query=urlencode(query)))


def fresh_postgres_url(prefix: str = "t") -> tuple[str, str]:
    """A store URL naming a new schema (created by the store on open) and that schema's name."""
    schema = f"cg_{prefix}_{uuid.uuid4().hex[:12]}"
    return with_schema(postgres_url(), schema), schema


def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it (nothing if it is already gone)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


_made: list[str] = []


def new_test_schema() -> str:
    """A store URL naming a new PostgreSQL schema, dropped when this process exits."""
    url, schema = fresh_postgres_url("srv")
    if not _made:
        atexit.register(_drop_made)
    _made.append(schema)
    return url


def _drop_made() -> None:
    for schema in _made:
        # A database already gone (CI tearing down) leaves nothing to drop.
        with contextlib.suppress(Exception):
            drop_schema(schema)
    _made.clear()
