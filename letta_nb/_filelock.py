"""One exclusive lock file across this user's processes, with a bounded wait (stdlib only).

Shared by the launcher (one embedded server per state dir) and the session (one demo agent per
server): both must stop N kernels that start at once from doing a thing N times, and neither may
hang a notebook when another process holds the lock forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, timeout: float, *, poll: float = 0.02) -> Iterator[bool]:
    """Hold an `flock` on `path` (created 0600) while the block runs; yields whether it was
    taken within `timeout` seconds (the caller decides what a timeout means)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    taken = False
                    break
                threading.Event().wait(poll)
        yield taken
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class HeldLock:
    """An `flock` held across calls until `release()` or this process's end (the OS drops it on
    kill -9, so a dead kernel never blocks its successor), naming its holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> int | None:
        """Take the lock (or keep it): None when this object holds it, else the holder's pid
        (0 when it did not say)."""
        if self._fd is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 16, 0).decode(errors="replace").strip()
            os.close(fd)
            return int(holder) if holder.isdigit() else 0
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock
