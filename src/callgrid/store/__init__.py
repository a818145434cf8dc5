"""Persistence behind one interface: SQLite by default; chosen by one URL."""

from callgrid.store.base import (
    AttemptRow,
    DeadLetterRow,
    DeliveryRow,
    DuplicateKey,
    Store,
    StoreTx,
    StoreUnusable,
    TimerRow,
    open_store,
)

__all__ = [
    "AttemptRow",
    "DeadLetterRow",
    "DeliveryRow",
    "DuplicateKey",
    "Store",
    "StoreTx",
    "StoreUnusable",
    "TimerRow",
    "open_store",
]
