"""What a schema is made of, read back from SQLite and from PostgreSQL in one shape (tables, their columns'
type families and nullability, primary keys, declared indexes), so that a test can tell whether the two
databases built the same schema from one source (the main store's migrations, the router's scripts)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path

import psycopg

from callgrid.testing.stores import postgres_url

Schema = dict[str, dict[str, object]]


def sqlite_schema(path: Path, *, skip: Collection[str] = ()) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables: Schema = {}
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        names = [r[0] for r in conn.execute(query) if r[0] not in skip]
        for name in names:
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()
            columns = {r[1]: (_family(r[2]), bool(r[3]) or r[5] > 0) for r in info}
            key = [r[1] for r in sorted((r for r in info if r[5] > 0), key=lambda r: r[5])]
            without_rowid = (
                conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
                .fetchone()[0]
                .upper()
                .rstrip()
                .endswith("WITHOUT ROWID")
            )
            # A single INTEGER primary key is the rowid under its own name (on PostgreSQL: that identity).
            aliased = len(key) == 1 and next(r[2] for r in info if r[1] == key[0]).upper() == "INTEGER"
            if not without_rowid and not aliased:
                columns["rowid"] = ("integer", True)  # implicit in SQLite, declared in PostgreSQL
            indexes = {}
            for index in conn.execute(f"PRAGMA index_list({name})").fetchall():
                if index[3] == "c":  # declared by CREATE INDEX (not a key's own)
                    indexes[index[1]] = [r[2] for r in conn.execute(f"PRAGMA index_info({index[1]})")]
            tables[name] = {"columns": columns, "key": key, "indexes": indexes}
        return tables
    finally:
        conn.close()


def postgres_schema(schema: str, *, skip: Collection[str] = ()) -> Schema:
    with psycopg.connect(postgres_url()) as conn:
        tables: Schema = {}
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchall()
            if r[0] not in skip
        ]
        for name in names:
            columns = {
                r[0]: (_family(r[1]), r[2] == "NO")
                for r in conn.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s",
                    (schema, name),
                ).fetchall()
            }
            indexes: dict[str, list[str]] = {}
            key: list[str] = []
            rows = conn.execute(
                "SELECT i.relname, ix.indisprimary, array_agg(a.attname ORDER BY k.n) "
                "FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid "
                "JOIN pg_namespace ns ON ns.oid = t.relnamespace "
                "CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n) "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
                "WHERE ns.nspname = %s AND t.relname = %s GROUP BY i.relname, ix.indisprimary",
                (schema, name),
            ).fetchall()
            for index_name, primary, cols in rows:
                if primary:
                    key = list(cols)
                else:
                    indexes[index_name] = list(cols)
            tables[name] = {"columns": columns, "key": key, "indexes": indexes}
        return tables


def _family(declared: str) -> str:
    declared = declared.lower()
    if declared in ("real", "double precision"):
        return "float"
    if declared in ("integer", "bigint"):
        return "integer"
    if declared == "text":
        return "text"
    raise AssertionError(f"a column type neither store family knows: {declared}")
