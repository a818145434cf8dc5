"""The schema, one history for both stores: the SQL files in `migrations/`, applied in order of their number.

The files are written in SQLite's dialect, kept to the part of it PostgreSQL also speaks (CREATE TABLE,
CREATE INDEX, ALTER TABLE ADD COLUMN, INSERT ... SELECT with lower/COALESCE/COUNT). `for_postgresql`
translates what differs, so a new file needs no edit anywhere else to reach both stores:

- storage types keep their width: SQLite's REAL and INTEGER are 8 bytes, PostgreSQL's are 4
  (REAL in PostgreSQL would round a timestamp to the minute), so they become DOUBLE PRECISION and BIGINT;
- a SQLite table has an implicit `rowid` (insertion order; the delivery claim breaks ties with it)
  unless declared WITHOUT ROWID: the PostgreSQL table gets it as an identity column, and drops the clause.

What cannot be translated (AUTOINCREMENT, INSERT OR ..., PRAGMA, triggers) is refused by name, and
`tests/store/test_schema.py` applies every file to both stores and compares what they built.
"""

from __future__ import annotations

import re
from importlib import resources

_NOT_PORTABLE = ("AUTOINCREMENT", "INSERT OR ", "PRAGMA", "CREATE TRIGGER", "REPLACE INTO", "STRICT")


class MigrationNotPortable(ValueError):
    """A migration file uses SQLite that PostgreSQL does not speak."""


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, file name, statements) of every migration file, in version order."""
    found = []
    for entry in resources.files("callgrid.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            # Drop comment lines: statements are split on ";" and comments may contain one.
            sql = "\n".join(line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--"))
            statements = [s.strip() for s in sql.split(";") if s.strip()]
            found.append((int(entry.name.split("_", 1)[0]), entry.name, statements))
    found.sort()
    versions = [v for v, _, _ in found]
    duplicated = sorted({v for v in versions if versions.count(v) > 1})
    if duplicated:
        # Two branches each added "the next" number: refuse rather than apply one and skip the other.
        raise MigrationNotPortable(f"two migration files share the version number {duplicated}: renumber one")
    return found


_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.IGNORECASE)
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*$", re.IGNORECASE)


def for_postgresql(statement: str, name: str = "") -> str:
    """One migration statement in PostgreSQL's dialect."""
    upper = " ".join(statement.upper().split())
    for construct in _NOT_PORTABLE:
        if construct in upper:
            raise MigrationNotPortable(f"{name}: '{construct.strip()}' has no PostgreSQL translation: {statement[:80]}")
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement, flags=re.IGNORECASE)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql, flags=re.IGNORECASE)
    if _CREATE_TABLE.match(sql):
        if _WITHOUT_ROWID.search(sql):
            sql = _WITHOUT_ROWID.sub(")", sql)
        else:
            opening = _CREATE_TABLE.match(sql)
            assert opening is not None
            at = opening.end()
            sql = sql[:at] + "\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY," + sql[at:]
    return sql


# Every table a reset empties, children before parents (meta stays: keys and the default resource survive).
STATE_TABLES = (
    "eventgrid_metrics",
    "delivery_attempts",
    "dead_letters",
    "deliveries",
    "events",
    "event_subscriptions",
    "eventgrid_topics",
    "timers",
    "repeatable_requests",
    "recordings",
    "call_connections",
    "calls",
    "endpoints",
    "phone_numbers",
    "number_holds",
    "number_operations",
    "number_reservations",
    "number_searches",
    "identities",
    "communication_resources",
)


def delivery_progress_columns(columns: list[str]) -> list[str]:
    """What an attempt changes of a delivery row: both stores update only these. An UPDATE that names a
    column rewrites every index on it, even to the same value, so the event and subscription indexes stay
    out of each outcome's writes."""
    fixed = ("id", "kind", "event_id", "subscription_id", "created_at", "max_attempts", "audience")
    return [c for c in columns if c not in fixed]
