"""Recovery: runs a crash left unfinished are closed once, and runs whose end could not be
stored yet are stored as soon as storage allows.

``close_orphans`` runs at startup (the database lock guarantees no other server is running
them). A stored stream that already ended only gets its row fixed; one cut off mid-run gets
``stop_reason: error`` and an error frame right after its last stored frame, so readers always
reach a terminal frame and the stored seqs stay ``1..N``.

``Settler`` keeps retrying, with backoff, what ``RunDriver.finish`` could not store (a run's
final frames, its final row) while the run itself is already over for its readers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from letta_nb.server import schemas
from letta_nb.server.engine.framelog import FrameLog
from letta_nb.server.engine.live import LiveRun
from letta_nb.server.engine.wire import DONE, error_frames
from letta_nb.server.storage import Store

log = logging.getLogger(__name__)

SETTLE_FIRST = 0.5
SETTLE_CAP = 30.0
ORPHAN_MESSAGE = "The server stopped while this run was in progress."
ORPHAN_DETAIL = "letta_nb server restarted; the run was closed as failed."


def _stored_end(store: Store, run_id: str, last: int) -> tuple[str, str] | None:
    """(status, stop_reason) if the stored stream already ends with a terminal frame."""
    rows = store.read_frames(run_id, max(0, last - 3), 3)
    if not rows:
        return None
    tail = rows[-1][1]
    reason = None
    for _seq, data in rows:
        text = data.decode(errors="replace")
        if text.startswith("data: {") and '"message_type":"stop_reason"' in text.replace(" ", ""):
            reason = json.loads(text[6:]).get("stop_reason")
    if tail == DONE or tail.startswith(b"event: error"):
        reason = reason or "error"
        if reason == "cancelled":
            return "cancelled", reason
        ok = reason in schemas.COMPLETED_REASONS and tail == DONE
        return ("completed" if ok else "failed"), reason
    return None


def close_orphans(store: Store) -> int:
    """Close runs left created/running by a crash (call before serving; synchronous)."""
    orphans = store.unfinished_runs()
    for row in orphans:
        run_id = row["id"]
        seq = store.last_frame_seq(run_id)
        metadata = dict(row["metadata"])
        ended = _stored_end(store, run_id, seq) if row["background"] else None
        if ended is not None:
            status, stop = ended
        else:
            status, stop = "failed", "error"
            error = schemas.error_message(run_id, "internal_error", ORPHAN_MESSAGE, ORPHAN_DETAIL)
            metadata["error"] = error
            if row["background"]:
                frames = error_frames(error, seq + 1)
                store.append_frames((run_id, seq + 1 + i, f) for i, f in enumerate(frames))
                seq += len(frames)
        store.finish_run(
            run_id,
            status=status,
            stop_reason=stop,
            last_seq=seq,
            usage=row["usage"],
            metadata=metadata,
            total_duration_ns=None,
            agent_id=row["agent_id"],
        )
    if orphans:
        log.warning("closed %d run(s) left unfinished by a previous server", len(orphans))
    return len(orphans)


class Settler:
    """Background retries of finished runs' unstored frames and rows."""

    def __init__(
        self,
        log_: FrameLog,
        store_row: Callable[[LiveRun, dict[str, Any]], Awaitable[bool]],
        on_settled: Callable[[LiveRun], None],
    ) -> None:
        self._log = log_
        self._store_row = store_row
        self._on_settled = on_settled
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, run: LiveRun, row: dict[str, Any], row_stored: bool) -> None:
        run.settled = False
        task = asyncio.get_running_loop().create_task(self._settle(run, row, row_stored))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _settle(self, run: LiveRun, row: dict[str, Any], row_stored: bool) -> None:
        delay = SETTLE_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, SETTLE_CAP)
            if run.unstored and not await self._log.store_tail(run):
                continue
            if not row_stored:
                row_stored = await self._store_row(run, {**row, "last_seq": run.seq})
            if row_stored:
                break
        log.warning("run %s: its end is stored now (seq %d)", run.id, run.seq)
        run.settled = True
        self._on_settled(run)

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
