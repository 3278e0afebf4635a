"""Append-only text with O(1) appends, compact memory and a cheap tail.

A million-token answer arrives as a million tiny strings; keeping them in one list costs ~60
bytes each, and re-joining everything on each append is O(n²). Pieces are folded into blocks
of ~`BLOCK` pieces, so memory stays close to the text size and the tail is a slice of the last
blocks only.
"""

from __future__ import annotations

BLOCK = 512


class TextBuffer:
    __slots__ = ("_blocks", "_parts", "_size")

    def __init__(self, text: str = "") -> None:
        self._blocks: list[str] = [text] if text else []
        self._parts: list[str] = []
        self._size = len(text)

    def append(self, piece: str) -> None:
        if not piece:
            return
        self._parts.append(piece)
        self._size += len(piece)
        if len(self._parts) >= BLOCK:
            self._blocks.append("".join(self._parts))
            self._parts.clear()

    def __len__(self) -> int:
        return self._size

    def __str__(self) -> str:
        if self._parts:
            self._blocks.append("".join(self._parts))
            self._parts.clear()
        if len(self._blocks) > 1:
            self._blocks[:] = ["".join(self._blocks)]
        return self._blocks[0] if self._blocks else ""

    def tail(self, limit: int) -> str:
        """The last `limit` characters, touching only the blocks it needs."""
        if limit <= 0:
            return ""
        pieces: list[str] = []
        have = 0
        for piece in reversed(self._parts):
            pieces.append(piece)
            have += len(piece)
            if have >= limit:
                break
        else:
            for block in reversed(self._blocks):
                pieces.append(block)
                have += len(block)
                if have >= limit:
                    break
        text = "".join(reversed(pieces))
        return text[-limit:]
