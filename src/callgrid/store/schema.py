"""The schema, one history for both stores: the SQL files in `migrations/`, applied in order of their number.

The files are written in SQLite's dialect, kept to the part of it PostgreSQL also speaks; `for_postgresql`
(callgrid/sql_dialect.py, which the router's schema goes through too) translates what differs, so a new
file needs no edit anywhere else to reach both stores. `tests/store/test_schema.py` applies every file to
both stores and compares what they built.
"""

from __future__ import annotations

from importlib import resources

from callgrid.sql_dialect import MigrationNotPortable, for_postgresql

__all__ = ["STATE_TABLES", "MigrationNotPortable", "delivery_progress_columns", "for_postgresql", "migrations"]


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
