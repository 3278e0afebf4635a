"""The per-run SSE frame log's writer: batches committed in order on a thread of their own,
never a frame that does not directly follow the run's last committed one."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .sqlite import BUSY_TIMEOUT_MS, WRITE_RETRY_SECONDS, connect, retry_transient

log = logging.getLogger(__name__)

# One statement inserts a run's whole batch: the frames travel as one blob plus a JSON list of
# ``offset << 32 | length`` integers, so SQLite does every row in C with the GIL released
# (``executemany`` re-takes the GIL per row: half the throughput, and it stalls the event loop).
INSERT_BATCH = (
    "INSERT INTO frames (run_id, seq, data) "
    "SELECT ?1, ?2 + key, substr(?3, value >> 32, value & 4294967295) FROM json_each(?4)"
)


def insert_batch(
    db: sqlite3.Connection, run_id: str, first_seq: int, frames: Sequence[bytes]
) -> None:
    """Insert contiguous frames ``first_seq, first_seq + 1, ...`` of one run (no commit)."""
    offsets = []
    pos = 1
    for f in frames:
        n = len(f)
        offsets.append(pos << 32 | n)
        pos += n
    db.execute(INSERT_BATCH, (run_id, first_seq, b"".join(frames), json.dumps(offsets)))


class FrameGap(RuntimeError):
    """A batch part that does not follow the run's last committed frame (never stored)."""


# A batch part: (run key, seq of its first frame, its contiguous frames). The run key is the
# run id or any object with an ``id`` attribute (the engine passes its live run).
FramePart = tuple[Any, int, Sequence[bytes]]
# What the writer reports per (merged) part: the part, then None or why it was not stored.
CommitResult = tuple[Any, int, Sequence[bytes], BaseException | None]


def _run_key(run: Any) -> str:
    return run if isinstance(run, str) else str(run.id)


class FrameWriter:
    """Commits frame batches on its own thread and SQLite connection, in submission order.

    The event loop only hands batches over; inserting and committing (the bulk of a live run's
    cost) run here without the GIL, so the loop keeps producing and serving meanwhile. Parts
    that queue up while a commit is in flight are committed together (group commit). A part
    that does not start right after its run's last committed seq is refused (``FrameGap``), so
    once a commit has failed nothing later of that run can land behind the hole.
    ``on_commit(results)`` is called on this thread after each commit (or failure).
    """

    def __init__(
        self,
        path: Path,
        write_lock: threading.Lock,
        on_commit: Callable[[list[CommitResult]], None],
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        retry_seconds: float = WRITE_RETRY_SECONDS,
        pragmas: Sequence[str] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._write_lock = write_lock
        self._db = connect(path, busy_timeout_ms, pragmas)
        self._retry_seconds = retry_seconds
        self._sleep = sleep
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._queue: list[FramePart] = []
        self._expected: dict[str, int] = {}  # run id -> seq its next stored frame must have
        self._closing = False
        self._thread = threading.Thread(
            target=self._work, name="letta-nb-frame-writer", daemon=True
        )
        self._thread.start()

    def submit(self, parts: list[FramePart]) -> None:
        with self._cond:
            self._queue.extend(parts)
            self._cond.notify()

    def forget(self, run_id: str) -> None:
        """The run is finished and settled: drop its contiguity state."""
        with self._cond:
            self._expected.pop(run_id, None)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._db.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                parts, self._queue = self._queue, []
                expected = dict(self._expected)
            results = self._commit(parts, expected)
            try:
                self._on_commit(results)
            except Exception:  # e.g. the loop closed during shutdown
                log.debug("frame commit callback failed", exc_info=True)

    def _commit(self, parts: list[FramePart], expected: dict[str, int]) -> list[CommitResult]:
        """Merge each run's contiguous parts, refuse gaps, commit the rest in one transaction."""
        merged: dict[str, list[Any]] = {}  # run id -> [run, first, frames]
        refused: list[CommitResult] = []
        for run, first, frames in parts:
            if not frames:
                continue
            key = _run_key(run)
            have = merged.get(key)
            if have is not None and first == have[1] + len(have[2]):
                have[2].extend(frames)
                continue
            want = expected.get(key, 1) if have is None else have[1] + len(have[2])
            if first != want:
                gap = FrameGap(f"frames of {key} from seq {first} do not follow seq {want - 1}")
                refused.append((run, first, frames, gap))
                continue
            merged[key] = [run, first, list(frames)]
        error: BaseException | None = None
        if merged:
            try:
                retry_transient(
                    lambda: self._write(merged),
                    budget=self._retry_seconds,
                    sleep=self._sleep,
                    what="frame commit",
                )
            except Exception as exc:  # the runs are told; the thread stays alive
                log.error("frame batch commit failed: %s", exc)
                error = exc
            else:
                with self._cond:
                    for key, (_run, first, frames) in merged.items():
                        self._expected[key] = first + len(frames)
        done: list[CommitResult] = [(r, f, fr, error) for r, f, fr in merged.values()]
        return done + refused

    def _write(self, merged: dict[str, list[Any]]) -> None:
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, (_run, first, frames) in merged.items():
                    insert_batch(self._db, key, first, frames)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
