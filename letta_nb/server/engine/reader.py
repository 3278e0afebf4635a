"""SSE readers: replay a run's stored frames, tail it live, and keep idle connections alive.

A reader never waits for a run that has ended: once the stored stream is exhausted and the run
is no longer live, it closes. That is what makes a resume at or after the end return at once.
A finished run whose last frames storage has not taken yet (a failed commit) is read from
memory to its terminal frame, so a reader always learns how the run ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from letta_nb.server.engine.db import Db
from letta_nb.server.engine.live import ForegroundPipe, LiveRun
from letta_nb.server.engine.wire import keepalive_ping

READ_BATCH = 4096
FIRST_BATCH = 32


async def read_run(
    db: Db,
    live_runs: Mapping[str, LiveRun],
    run_id: str,
    starting_after: int,
    *,
    include_pings: bool,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """Frames with seq > starting_after, then live frames until the run's terminal frame."""
    if run_id not in live_runs:  # finished (or never here): its stored stream is all there is
        async for stored in _replay(db, run_id, starting_after):
            yield stored
        return
    last = starting_after
    delivered: int | None = None
    batch = FIRST_BATCH  # small first read: the first byte goes out fast at any position
    while True:
        live = live_runs.get(run_id)
        changed = live.changed if live is not None else None
        # Taken before the read: frames committed while it runs on its thread may be missing
        # from it, so only a run that had ended *before* the read may end this reader.
        ended_before = live is None or live.done
        if live is not None:
            chunk = live.tail_after(last)  # a live reader: every committed frame, from memory
            if chunk is not None:
                last = delivered = live.committed
                yield chunk
                continue
        rows = await db.read(db.store.read_frames, run_id, last, batch)
        short = len(rows) < batch
        batch = READ_BATCH
        if live is not None and rows and rows[-1][0] > live.committed:
            # Read on its thread right after a commit the loop has not seen yet: never get
            # ahead of `committed` (the run's status and its readers move together).
            rows = [r for r in rows if r[0] <= live.committed]
            short = False
        if rows:
            last = delivered = rows[-1][0]
            yield b"".join(r[1] for r in rows)
            if not (short and live is None):
                continue
        if live is None:  # settled before the read: its stored stream is all there is
            return
        if ended_before:
            final = live.final_after(last)
            if final is not None:
                yield final
            if live.settled or final is not None or last >= live.seq:
                return
        assert changed is not None
        try:
            await asyncio.wait_for(changed.wait(), keepalive)
        except TimeoutError:
            if include_pings:
                yield keepalive_ping(run_id, delivered)


async def _replay(db: Db, run_id: str, starting_after: int) -> AsyncIterator[bytes]:
    """A finished run's stored frames; the next batch is read while this one is sent."""
    batch = FIRST_BATCH
    pending = asyncio.ensure_future(db.read(db.store.read_frames, run_id, starting_after, batch))
    try:
        while True:
            rows = await pending
            if not rows:
                return
            more = len(rows) == batch
            if more:
                batch = READ_BATCH
                pending = asyncio.ensure_future(
                    db.read(db.store.read_frames, run_id, rows[-1][0], batch)
                )
            yield b"".join(r[1] for r in rows)
            if not more:
                return
    finally:
        pending.cancel()


async def read_foreground(
    run_id: str, pipe: ForegroundPipe, *, include_pings: bool, keepalive: float
) -> AsyncIterator[bytes]:
    """The one connection of a foreground stream (frames are not stored; seq_id is null)."""
    while True:
        try:
            data = await pipe.take(keepalive)
        except TimeoutError:
            if include_pings:
                yield keepalive_ping(run_id, None)
            continue
        if data is None:
            return
        yield data
