"""Keys for rows written on every call: random, as ids on the wire are, cheap to make, and (`ordered_uuid`)
in the order they are made.

A random key (uuid4) lands on a random page of its table's primary-key index, so each commit rewrites
one more page per such row (SQLite writes whole pages to its WAL, then again at the checkpoint;
PostgreSQL dirties a page of the index). A routed call writes about ten of them. `ordered_uuid` keys start
with the time instead, so the rows of one commit share the index's last page, the one the previous commit
wrote anyway.

The random bits come from the kernel's generator (`os.urandom`), as `uuid.uuid4`'s do, but fetched 4 KiB
at a time: a system call per id was ~3 % of callgrid's CPU in a routed call's profile.
"""

from __future__ import annotations

import os
import threading
import time

_MS_BITS = (1 << 48) - 1
_LOW_BITS = (1 << 62) - 1
# Version 4 and the RFC 4122 variant, over 128 random bits.
_V4_CLEAR = ~(0xF << 76 | 0b11 << 62) & ((1 << 128) - 1)
_V4_SET = 4 << 76 | 0b10 << 62

_POOL_BYTES = 4096
_pool = b""
_at = 0
_lock = threading.Lock()


def _forget_pool() -> None:
    # A forked child must not hand out the bytes its parent hands out too.
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def random_bytes(n: int) -> bytes:
    """`n` (at most 4096) bytes from the kernel's cryptographic generator, taken from a pool."""
    global _pool, _at
    with _lock:
        if _at + n > len(_pool):
            _pool, _at = os.urandom(max(_POOL_BYTES, n)), 0
        start = _at
        _at += n
        return _pool[start:_at]


def _as_uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_uuid() -> str:
    """`str(uuid.uuid4())`, for less: the same 122 random bits and the same form."""
    return _as_uuid(int.from_bytes(random_bytes(16), "big") & _V4_CLEAR | _V4_SET)


def ordered_uuid() -> str:
    """A UUID in version 4's form (version nibble 4, RFC 4122 variant, 74 random bits), whose first 48
    bits are milliseconds of wall-clock time, so that later ones sort after earlier ones. Not a time to
    read back (a wall clock moves back at times): only where it is written."""
    random = int.from_bytes(random_bytes(10), "big")
    value = (
        (time.time_ns() // 1_000_000 & _MS_BITS) << 80
        | 4 << 76
        | (random >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random & _LOW_BITS
    )
    return _as_uuid(value)
