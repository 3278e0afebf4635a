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
