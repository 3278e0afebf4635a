"""Append-only text with O(1) appends, compact memory and a cheap tail.

A million-token answer arrives as a million tiny strings; keeping them in one list costs ~60
bytes each, and re-joining everything on each append is O(n²). Pieces are folded into blocks
of `BLOCK` pieces, merged geometrically, so memory stays close to the text size and the tail
copies only what it returns.

One thread appends (the follower), others read (renderers, `handle.transcript`). Appends take
no lock; the fold into a block and the readers' snapshot share one, so a reader never sees a
piece twice or misses one.
"""

from __future__ import annotations

import threading

BLOCK = 512


class TextBuffer:
    __slots__ = ("_blocks", "_lock", "_parts", "_size")

    def __init__(self, text: str = "") -> None:
        self._blocks: list[str] = [text] if text else []
        self._parts: list[str] = []
        self._size = len(text)
        self._lock = threading.Lock()

    def append(self, piece: str) -> None:
        if not piece:
            return
        self._parts.append(piece)
        self._size += len(piece)
        if len(self._parts) >= BLOCK:
            with self._lock:
                blocks = self._blocks
                blocks.append("".join(self._parts))
                self._parts = []
                # Merge like a binary counter: O(log n) blocks, each character copied O(log n)
                # times, and a long text ends up in a few large allocations instead of
                # thousands of small ones that fragment the heap.
                while len(blocks) > 1 and 2 * len(blocks[-1]) >= len(blocks[-2]):
                    last = blocks.pop()
                    blocks[-1] += last

    def _snapshot(self) -> tuple[list[str], list[str]]:
        with self._lock:
            return list(self._blocks), list(self._parts)

    def __len__(self) -> int:
        return self._size

    def __str__(self) -> str:
        blocks, parts = self._snapshot()
        return "".join(blocks + parts)

    def tail(self, limit: int) -> str:
        """The last `limit` characters, copying only those (blocks may be megabytes)."""
        if limit <= 0:
            return ""
        blocks, parts = self._snapshot()
        pieces: list[str] = []
        need = limit
        for piece in reversed([*blocks, *parts]):
            if len(piece) >= need:
                pieces.append(piece[-need:])
                break
            pieces.append(piece)
            need -= len(piece)
        return "".join(reversed(pieces))
