"""Persistence behind one interface: SQLite by default, PostgreSQL for several nodes; chosen by one URL."""

from __future__ import annotations

from callgrid.store.base import (
    AttemptRow,
    DeadLetterRow,
    DeliveryRow,
    DuplicateKey,
    Store,
    StoreConflict,
    StoreTx,
    StoreUnavailable,
    StoreUnusable,
    TimerRow,
)

__all__ = [
    "AttemptRow",
    "DeadLetterRow",
    "DeliveryRow",
    "DuplicateKey",
    "Store",
    "StoreConflict",
    "StoreTx",
    "StoreUnavailable",
    "StoreUnusable",
    "TimerRow",
    "open_store",
]

SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


async def open_store(url: str, *, verify: bool = False) -> Store:
    """Open the store at `url` (`sqlite:///path` or `postgresql://...`); `verify` also checks its integrity
    (a server's start does, a CLI command not).

    Raises :class:`StoreUnusable` when it cannot be opened or is damaged.
    """
    store: Store
    if url.startswith("sqlite:///"):
        from callgrid.store.sqlite import SqliteStore

        store = SqliteStore(url)
    elif url.startswith(("postgresql://", "postgres://")):
        # Imported only when used: a SQLite user needs no PostgreSQL driver.
        try:
            from callgrid.store.postgresql import PostgresStore
        except ImportError as exc:
            raise StoreUnusable(
                f"the PostgreSQL store needs psycopg ({exc}): pip install 'callgrid[postgresql]'"
            ) from None

        store = PostgresStore(url)
    else:
        raise StoreUnusable(f"unsupported store URL '{url}': use sqlite:///path or postgresql://user@host:port/db")
    await store.open(verify=verify)
    return store
