"""Both stores reach the same schema from the same migration files: tables, columns, indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from callgrid.store import open_store
from callgrid.store.schema import MigrationNotPortable, for_postgresql, migrations
from callgrid.testing.stores import drop_schema, fresh_postgres_url, postgres_url

Schema = dict[str, dict[str, object]]


def _sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables: Schema = {}
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        names = [r[0] for r in conn.execute(query)]
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
            if not without_rowid and name != "schema_migrations":
                columns["rowid"] = ("integer", True)  # implicit in SQLite, declared in PostgreSQL
            indexes = {}
            for index in conn.execute(f"PRAGMA index_list({name})").fetchall():
                if index[3] == "c":  # declared by CREATE INDEX (not a key's own)
                    indexes[index[1]] = [r[2] for r in conn.execute(f"PRAGMA index_info({index[1]})")]
            tables[name] = {"columns": columns, "key": key, "indexes": indexes}
        return tables
    finally:
        conn.close()


def _postgres_schema(schema: str) -> Schema:
    with psycopg.connect(postgres_url()) as conn:
        tables: Schema = {}
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchall()
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


async def test_both_stores_reach_the_same_schema(tmp_path: Path) -> None:
    sqlite_path = tmp_path / "callgrid.db"
    url, schema = fresh_postgres_url("schema")
    try:
        for store_url in (f"sqlite:///{sqlite_path}", url):
            store = await open_store(store_url, verify=True)
            await store.close()
        lite, pg = _sqlite_schema(sqlite_path), _postgres_schema(schema)
    finally:
        drop_schema(schema)
    assert sorted(lite) == sorted(pg)
    for table in lite:
        assert lite[table] == pg[table], table
    # And every migration file was applied by both.
    assert "deliveries" in lite and "reason" in lite["deliveries"]["columns"]  # type: ignore[operator]


async def test_a_second_open_applies_nothing_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url, schema = fresh_postgres_url("schema")
    try:
        for _ in range(2):
            store = await open_store(url)
            await store.close()
        newest = max(v for v, _, _ in migrations())
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            applied = conn.execute(f"SELECT COUNT(*) FROM {schema}.schema_migrations").fetchone()
            assert applied is not None and applied[0] == len(migrations())
            conn.execute(f"INSERT INTO {schema}.schema_migrations VALUES ({newest + 1})")
        from callgrid.store import StoreUnusable

        with pytest.raises(StoreUnusable, match="newer callgrid"):
            await open_store(url)
    finally:
        drop_schema(schema)


def test_the_translation_keeps_widths_and_refuses_what_it_cannot_translate() -> None:
    translated = for_postgresql("CREATE TABLE t (a INTEGER PRIMARY KEY, b REAL NOT NULL)")
    assert "BIGINT" in translated and "DOUBLE PRECISION" in translated
    assert "rowid BIGINT GENERATED ALWAYS AS IDENTITY" in translated
    assert "ROWID" not in for_postgresql("CREATE TABLE t (a TEXT PRIMARY KEY) WITHOUT ROWID").upper()
    with pytest.raises(MigrationNotPortable, match="AUTOINCREMENT"):
        for_postgresql("CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)", "0099_x.sql")
    with pytest.raises(MigrationNotPortable, match="INSERT OR"):
        for_postgresql("INSERT OR IGNORE INTO t VALUES (1)")
