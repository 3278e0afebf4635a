"""Private files and the one-server-per-database lock: the database, its WAL/SHM files and
its lock file are 0600, directories 0700."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing, else make it 0600 (SQLite gives its
    WAL and SHM files the database file's mode, so creating the database first covers them)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; an existing directory is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


class DatabaseInUse(RuntimeError):
    """Another server holds this database's lock file."""


class DbLock:
    """An exclusive ``flock`` on ``<db>.lock``, held for the server's lifetime.

    The kernel drops it when the process dies (even on kill -9), so a crashed server never
    blocks its successor, while a live one always does.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> DbLock:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DatabaseInUse(
                f"another letta-nb server (pid {holder}) is using {self.db_path}"
            ) from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
