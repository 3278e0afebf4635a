"""In-memory state of the runs this process is executing (or still settling into storage)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

RECENT_KEEP = 16384  # committed frames a live run keeps in memory for its live readers


class ForegroundPipe:
    """The bounded buffer between a foreground run and its one connection.

    Foreground frames are not stored, so they wait here for the reader. ``full`` tells the
    driver to wait for room (backpressure); a reader that stays stalled is cut loose with an
    error frame (``abandon``) and the run goes on into storage without it. Memory is bounded by
    ``cap`` bytes whatever the reader does.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._items: deque[bytes] = deque()
        self._size = 0
        self.peak = 0  # the most bytes it ever held (what a slow reader cost in memory)
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False
        self.abandoned = False

    @property
    def full(self) -> bool:
        return self._size >= self.cap

    def put(self, data: bytes) -> None:
        if self.closed:
            return
        self._items.append(data)
        self._size += len(data)
        self.peak = max(self.peak, self._size)
        if self._size >= self.cap:
            self._room.clear()
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def abandon(self, last: bytes) -> None:
        """Drop what the reader has not taken, leave it one final frame, and stop buffering."""
        self._items.clear()
        self._items.append(last)
        self._size = len(last)
        self.abandoned = True
        self.close()
        self._room.set()

    async def wait_room(self, timeout: float) -> bool:
        """Wait until the reader has taken enough; False if it did not within ``timeout``."""
        if not self.full:
            return True
        try:
            await asyncio.wait_for(self._room.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def take(self, timeout: float) -> bytes | None:
        """Everything buffered, as one chunk; None at the end; TimeoutError after ``timeout``."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        data = b"".join(self._items)
        self._items.clear()
        self._size = 0
        self._room.set()
        return data


@dataclass(slots=True)
class LiveRun:
    """A run this process executes: its frame numbering, committed window and lifecycle."""

    id: str
    agent_id: str
    background: bool
    include_pings: bool
    stream_tokens: bool
    max_steps: int
    conversation_id: str | None = None  # its history: a conversation, or the agent's default
    run_type: str = "send_message"
    lock_key: str | None = None  # the history lock it holds (conversations endpoints only)
    unlocked: bool = False  # its terminal frame is out: the lock is free for the next send
    started: float = field(default_factory=time.monotonic)
    ttft_ns: int | None = None  # time to the first frame of model output (not the ping)
    # -- the frame log (background runs) ----------------------------------------------------
    seq: int = 0  # seq of the last frame emitted
    committed: int = 0  # highest seq known committed (readers never get past it)
    unflushed: list[bytes] = field(default_factory=list)  # queued, not yet handed to the writer
    unflushed_first: int = 0
    recent: list[bytes] = field(default_factory=list)  # committed frames recent_base..committed
    recent_base: int = 1
    broken: BaseException | None = None  # a commit failed: nothing after `committed` is stored
    failures: int = 0  # commit failures seen (drain watches it)
    unstored: list[bytes] = field(default_factory=list)  # final frames after `committed`
    # -- lifecycle ---------------------------------------------------------------------------
    ended: bool = False  # its final status is decided (and its frames stored or in memory)
    final: dict[str, Any] | None = None  # the final run row, shown until storage has it
    done: bool = False  # the driver finished; readers end after the last frame
    settled: bool = True  # False while its final frames/row still wait for storage
    status: str = "running"
    stop_reason: str | None = None
    cancel_requested: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    pipe: ForegroundPipe | None = None  # foreground connection
    steps: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def tail_after(self, seq: int) -> bytes | None:
        """Committed frames after ``seq`` from memory, or None if the window does not hold them."""
        if not self.recent_base <= seq + 1 <= self.committed:
            return None
        return b"".join(self.recent[seq + 1 - self.recent_base :])

    def final_after(self, seq: int) -> bytes | None:
        """A finished run's final frames that storage has not taken yet (served from memory)."""
        if self.done and self.unstored and seq == self.committed:
            return b"".join(self.unstored)
        return None

    def committed_frames(self, first: int, frames: list[bytes]) -> None:
        """Record a committed batch (called on the loop, in commit order)."""
        if first != self.committed + 1:  # not contiguous (the writer refuses that): restart
            self.recent = []
        self.recent.extend(frames)
        if len(self.recent) > 2 * RECENT_KEEP:
            del self.recent[: len(self.recent) - RECENT_KEEP]
        self.committed = first + len(frames) - 1
        self.recent_base = self.committed - len(self.recent) + 1
        if self.unstored and self.committed >= self.seq:
            self.unstored = []
