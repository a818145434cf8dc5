"""Where state lives, and one server per data directory.

Every command finds the data directory the same way (`locate_data_dir`), so `callgrid serve`, `callgrid demo`,
the router commands and every client command agree without flags: `--data-dir`, else `$CALLGRID_DATA_DIR`,
else the nearest `.callgrid` folder in the working directory or above it (as git finds `.git`), else a
per-user folder (`$XDG_DATA_HOME/callgrid`, by default `~/.local/share/callgrid`).

A server holds an exclusive lock on `<data dir>/server.lock` for its life.

Two servers on one data directory would both run the delivery loop over one outbox (every event delivered
twice) and both answer for the same resource. The lock is `flock`ed, so the kernel releases it when the
process ends, however it ends: a crash leaves no stale lock behind. Commands that only read or write
configuration and the store (`callgrid env`, `numbers`, ...) do not take it and keep working beside a server.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; one server per data directory is then the user's care
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DATA_DIR_ENV",
    "DATA_DIR_FOLDER",
    "DataDirInUse",
    "LocatedDataDir",
    "ServerLock",
    "locate_data_dir",
    "lock_data_dir",
    "user_data_dir",
]

LOCK_NAME = "server.lock"
DATA_DIR_ENV = "CALLGRID_DATA_DIR"
DATA_DIR_FOLDER = ".callgrid"


@dataclass(frozen=True)
class LocatedDataDir:
    path: Path
    how: str  # why this one, for messages: "--data-dir", "$CALLGRID_DATA_DIR", ...
    explicit: bool  # named by the user (flag or variable), not found or defaulted


def user_data_dir() -> Path:
    """The per-user data directory, where each platform keeps applications' data."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "callgrid"


def locate_data_dir(given: Path | None = None, *, cwd: Path | None = None) -> LocatedDataDir:
    """The data directory a command uses: named, else found upwards from `cwd`, else the per-user one."""
    if given is not None:
        return LocatedDataDir(given, "--data-dir", True)
    named = os.environ.get(DATA_DIR_ENV)
    if named:
        return LocatedDataDir(Path(named), f"${DATA_DIR_ENV}", True)
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DATA_DIR_FOLDER
        if candidate.is_dir():
            return LocatedDataDir(candidate, f"the nearest {DATA_DIR_FOLDER} folder from {here} upwards", False)
    return LocatedDataDir(
        user_data_dir(),
        f"the per-user default: no --data-dir, no ${DATA_DIR_ENV}, no {DATA_DIR_FOLDER} folder in {here} or above",
        False,
    )


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
