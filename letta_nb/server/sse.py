"""SSE readers: replay a run's stored frames, tail it live, and keep idle connections alive.

A reader never waits for a run that has ended: once the stored stream is exhausted and the run
is no longer live, it closes. That is what makes a resume at or after the end return at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from letta_nb.server import schemas
from letta_nb.server.ids import new_id
from letta_nb.server.runner import DONE, Engine, LiveRun, render

READ_BATCH = 4096
FIRST_BATCH = 32
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"


def keepalive_ping(run_id: str, seq: int | None) -> bytes:
    """A ping that is not stored; it repeats the last seq this connection delivered."""
    frame = schemas.envelope(new_id("ping"), "ping", otid=None, step_id=None, run_id=run_id)
    return render(frame, seq)


async def read_run(
    engine: Engine,
    run_id: str,
    starting_after: int,
    *,
    include_pings: bool,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """Frames with seq > starting_after, then live frames until the run's terminal frame."""
    last = starting_after
    delivered: int | None = None
    batch = FIRST_BATCH  # small first read: the first byte goes out fast at any position
    while True:
        live: LiveRun | None = engine.live.get(run_id)
        changed = live.changed if live is not None else None
        if live is not None:
            chunk = live.tail_after(last)  # a live reader: every committed frame, from memory
            if chunk is not None:
                last = delivered = live.committed
                yield chunk
                continue
        rows = engine.store.read_frames(run_id, last, batch)
        batch = READ_BATCH
        if rows:
            last = delivered = rows[-1][0]
            yield b"".join(r[1] for r in rows)
            continue
        if live is None or live.done:
            return
        assert changed is not None
        try:
            await asyncio.wait_for(changed.wait(), keepalive)
        except TimeoutError:
            if include_pings:
                yield keepalive_ping(run_id, delivered)


async def read_foreground(
    run: LiveRun, *, include_pings: bool, keepalive: float
) -> AsyncIterator[bytes]:
    """The one connection of a foreground stream (frames are not stored; seq_id is null)."""
    assert run.queue is not None
    while True:
        try:
            item = await asyncio.wait_for(run.queue.get(), keepalive)
        except TimeoutError:
            if include_pings:
                yield keepalive_ping(run.id, None)
            continue
        if item is None:
            return
        yield item
        if item == DONE:
            return
