"""Keys for rows written on every call: random, as ids on the wire are, but in the order they are made.

A random key (uuid4) lands on a random page of its table's primary-key index, so each commit rewrites
one more page per such row (SQLite writes whole pages to its WAL, then again at the checkpoint;
PostgreSQL dirties a page of the index). A routed call writes about ten of them. These keys start with
the time instead, so the rows of one commit share the index's last page, the one the previous commit
wrote anyway.
"""

from __future__ import annotations

import os
import time
import uuid

_MS_BITS = (1 << 48) - 1
_LOW_BITS = (1 << 62) - 1


def ordered_uuid() -> str:
    """A UUID in version 4's form (version nibble 4, RFC 4122 variant, 74 random bits), whose first 48
    bits are milliseconds of wall-clock time, so that later ones sort after earlier ones. Not a time to
    read back (a wall clock moves back at times): only where it is written."""
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000 & _MS_BITS) << 80
        | 4 << 76
        | (random >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random & _LOW_BITS
    )
    return str(uuid.UUID(int=value))
