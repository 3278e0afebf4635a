"""TextBuffer: a long message's tail and join stay exact, its memory near the text size."""

from __future__ import annotations

import sys

from letta_nb.core.textbuf import TextBuffer


def test_textbuf_tail_and_join() -> None:
    buf = TextBuffer()
    pieces = [f" w{i:05d}" for i in range(5000)]
    for p in pieces:
        buf.append(p)
    whole = "".join(pieces)
    assert len(buf) == len(whole)
    assert buf.tail(17) == whole[-17:]
    assert buf.tail(10_000) == whole[-10_000:]
    assert str(buf) == whole
    buf.append(" end")
    assert buf.tail(4) == " end" and str(buf) == whole + " end"


def test_textbuf_memory_stays_near_the_text_size() -> None:
    buf = TextBuffer()
    for _ in range(200_000):
        buf.append("tok ")
    size = len(buf)
    held = sum(sys.getsizeof(b) for b in buf._blocks) + sum(sys.getsizeof(p) for p in buf._parts)
    assert held < 1.2 * size + 64 * 1024  # ~text size, not 60 bytes per piece


def test_textbuffer_merges_blocks_geometrically_and_tails_exactly() -> None:
    """A long text lives in O(log n) large blocks (no heap fragmentation); tail stays exact."""
    from letta_nb.core.textbuf import BLOCK, TextBuffer

    buf = TextBuffer()
    pieces = [f" w{i}" for i in range(BLOCK * 300 + 7)]
    for piece in pieces:
        buf.append(piece)
    whole = "".join(pieces)
    assert str(buf) == whole and len(buf) == len(whole)
    assert len(buf._blocks) <= 10  # 300 folds of BLOCK pieces: at most log2(300) + 1 blocks
    for limit in (1, 5, 4000, 123_456, len(whole), len(whole) + 10):
        assert buf.tail(limit) == whole[-limit:]
