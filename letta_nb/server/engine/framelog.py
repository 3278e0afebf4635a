"""The frame log: numbering, batching and committing a run's frames, and the live window.

Background frames flow: ``queue`` collects them per run; ``flush`` (once per loop turn) hands
the batch to the ``FrameWriter`` thread, which commits it; only then, back on the loop, the
frames join the run's in-memory window of committed frames (``LiveRun.recent``) and the run's
readers are woken once. Live readers copy straight from that window, readers further behind
read SQLite. So a frame is always stored before it is served.

The contiguity rule: the writer refuses any part that does not follow the run's last
committed seq, so after a failed commit nothing later of that run is stored. The run is then
``broken``: its driver stops, and it ends with error frames numbered right after the last
committed one (``replace_tail``), which readers get from memory until storage takes them.
Foreground frames are not stored: they go to the run's bounded ``ForegroundPipe``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from letta_nb.server.engine.live import LiveRun
from letta_nb.server.engine.wire import render
from letta_nb.server.storage import CommitResult, FrameGap, FramePart, Store

FLUSH_AT = 4096  # frames a run buffers before it flushes without waiting for the loop turn
IN_FLIGHT = 4 * FLUSH_AT  # uncommitted frames a run may have before its driver waits


class FrameLog:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._touched: list[LiveRun] = []
        self._flush_scheduled = False
        self.writer = store.frame_writer(self._on_commit)

    def close(self) -> None:
        """Hand over what is queued and wait for the writer to commit it (shutdown)."""
        self.flush()
        self.writer.close()

    def forget(self, run: LiveRun) -> None:
        self.writer.forget(run.id)

    # -- producing ---------------------------------------------------------------------------
    def emit(
        self, run: LiveRun, frame: dict[str, Any] | bytes, *, event: str | None = None
    ) -> None:
        """One frame: numbered and logged (background) or piped to the connection."""
        if run.background:
            run.seq += 1
            data = frame if isinstance(frame, bytes) else render(frame, run.seq, event=event)
            self.queue(run, data)
        elif run.pipe is not None:
            if run.ttft_ns is None and not (
                isinstance(frame, dict) and frame.get("message_type") == "ping"
            ):
                run.ttft_ns = int((time.monotonic() - run.started) * 1e9)
            run.pipe.put(frame if isinstance(frame, bytes) else render(frame, None, event=event))

    def queue(self, run: LiveRun, data: bytes) -> None:
        """Buffer a numbered frame (``run.seq``); ``flush`` sends it to the writer."""
        if run.broken is not None:  # nothing after the hole may be stored: drop it
            return
        if run.ttft_ns is None and (run.seq > 1 or not run.include_pings):  # seq 1: the ping
            run.ttft_ns = int((time.monotonic() - run.started) * 1e9)
        buf = run.unflushed
        if not buf:
            run.unflushed_first = run.seq
            self._touched.append(run)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self.flush)
        buf.append(data)
        if len(buf) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Hand every run's buffered frames to the writer thread as one batch."""
        self._flush_scheduled = False
        if not self._touched:
            return
        parts: list[FramePart] = [
            (run, run.unflushed_first, run.unflushed) for run in self._touched if run.unflushed
        ]
        for run in self._touched:
            run.unflushed = []
        self._touched = []
        if parts:
            self.writer.submit(parts)

    # -- committing --------------------------------------------------------------------------
    def _on_commit(self, results: list[CommitResult]) -> None:
        """Writer thread: parts are durable (or failed); continue on the loop."""
        self._loop.call_soon_threadsafe(self._committed, results)

    def _committed(self, results: list[CommitResult]) -> None:
        """Loop: committed frames become visible to live readers, who are woken once."""
        woken: dict[str, LiveRun] = {}
        for run, first, frames, error in results:
            if error is None:
                run.committed_frames(first, list(frames))
            elif isinstance(error, FrameGap):
                pass  # queued behind a failed part: dropped by the contiguity rule
            elif first == run.committed + 1:
                run.failures += 1
                if run.broken is None:
                    run.broken = error
                    run.unflushed = []
            woken[run.id] = run
        for run in woken.values():
            run.notify()

    async def drain(self, run: LiveRun) -> bool:
        """Wait until every frame of ``run`` emitted so far is committed; False if one failed."""
        self.flush()
        failures = run.failures
        while run.committed < run.seq and run.broken is None and run.failures == failures:
            await run.changed.wait()
        return run.broken is None and run.committed >= run.seq

    def ahead(self, run: LiveRun) -> bool:
        """Whether the run's producer is too far ahead of storage (it must wait)."""
        return run.background and run.seq - run.committed > IN_FLIGHT

    async def catch_up(self, run: LiveRun) -> None:
        """Backpressure: wait until at most half the in-flight window is uncommitted (or the
        log broke), so a fast brain never piles up frames in memory faster than SQLite takes
        them, and each commit stays a bounded transaction."""
        self.flush()
        target = run.seq - IN_FLIGHT // 2
        while run.committed < target and run.broken is None:
            await run.changed.wait()

    def replace_tail(self, run: LiveRun, frames: list[bytes]) -> None:
        """A broken run's end: ``frames`` numbered from ``committed + 1`` replace whatever
        was emitted after the hole; they are kept in memory until stored (``store_tail``)."""
        run.unflushed = []
        run.seq = run.committed + len(frames)
        run.unstored = list(frames)

    async def store_tail(self, run: LiveRun) -> bool:
        """Try to store the run's unstored final frames once; True when they are committed."""
        if not run.unstored:
            return True
        failures = run.failures
        self.writer.submit([(run, run.committed + 1, list(run.unstored))])
        while run.unstored and run.failures == failures:
            await run.changed.wait()
        return not run.unstored
