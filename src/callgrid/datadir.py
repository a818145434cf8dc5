"""One server per data directory: an exclusive lock on `<data dir>/server.lock`, held for the server's life.

Two servers on one data directory would both run the delivery loop over one outbox (every event delivered
twice) and both answer for the same resource. The lock is `flock`ed, so the kernel releases it when the
process ends, however it ends: a crash leaves no stale lock behind. Commands that only read or write
configuration and the store (`callgrid env`, `numbers`, ...) do not take it and keep working beside a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; one server per data directory is then the user's care
    fcntl = None  # type: ignore[assignment]

__all__ = ["DataDirInUse", "ServerLock", "lock_data_dir"]

LOCK_NAME = "server.lock"


class DataDirInUse(Exception):
    """Another live process holds the data directory; the message says which and what to do."""


class ServerLock:
    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle = handle
        self.path = path

    def release(self) -> None:
        self._handle.close()  # closing the file releases the flock


def lock_data_dir(data_dir: Path, *, port: int) -> ServerLock:
    """Take the data directory for this process, or raise :class:`DataDirInUse`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # "a+": never truncate before holding the lock, so a refused second server cannot wipe the holder's note.
    handle = path.open("a+", encoding="utf-8")
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataDirInUse(
                f"The data directory {data_dir.resolve()} is in use by a running callgrid server ({holder}). "
                "Stop that server first, or start this one with another --data-dir."
            ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, port {port}\n")
    handle.flush()
    return ServerLock(handle, path)
