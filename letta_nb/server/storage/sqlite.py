"""SQLite connections with the server's settings, and bounded retries while another
connection holds the write lock (a full disk or an I/O error is never retried)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


BUSY_TIMEOUT_MS = 5000  # SQLite's own wait for a lock held by another connection, per attempt
WRITE_RETRY_SECONDS = 30.0  # then retries with backoff for this long before a write fails
_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 1.0
PRAGMAS = (
    "synchronous=NORMAL",
    "cache_size=-65536",
    "mmap_size=268435456",
)

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """A lock held by another connection: worth retrying (a full disk or I/O error is not)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def connect(path: Path, busy_timeout_ms: int, pragmas: Sequence[str] = ()) -> sqlite3.Connection:
    """A connection with the server's settings (autocommit; explicit BEGIN where needed)."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    for pragma in (*PRAGMAS, *pragmas):
        db.execute(f"PRAGMA {pragma}")
    return db


def retry_transient(
    attempt: Callable[[], T],
    *,
    budget: float,
    sleep: Callable[[float], None],
    what: str,
) -> T:
    """Call ``attempt`` until it does not fail with a lock error, for ``budget`` seconds."""
    deadline = time.monotonic() + budget
    delay = _BACKOFF_FIRST
    retries = 0
    while True:
        try:
            result = attempt()
        except sqlite3.OperationalError as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            if retries == 0:
                log.warning("%s: database locked by another connection; retrying", what)
            retries += 1
            sleep(delay)
            delay = min(delay * 2, _BACKOFF_CAP)
            continue
        if retries:
            log.warning("%s: succeeded after %d retries", what, retries)
        return result
