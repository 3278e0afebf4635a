"""Approval state, throttle and text buffer: the small pieces the follower and views rely on."""

from __future__ import annotations

import sys
import threading

import pytest

from letta_nb.core.approval import ApprovalState
from letta_nb.core.errors import ApprovalError
from letta_nb.core.textbuf import TextBuffer
from letta_nb.core.throttle import Throttle

CALLS = [
    {"tool_call_id": "call_1", "name": "dangerous_op", "arguments": "{}"},
    {"tool_call_id": "call_2", "name": "dangerous_op", "arguments": "{}"},
]


def test_approval_answers_once() -> None:
    state = ApprovalState("run-1", CALLS)
    state.begin(True)
    with pytest.raises(ApprovalError, match="already answered"):
        state.begin(False, "no")
    state.succeeded("run-2")
    assert state.state == "approved" and state.outcome_run_id == "run-2"
    with pytest.raises(ApprovalError):
        state.begin(True)


def test_approval_racing_answers_send_one() -> None:
    state = ApprovalState("run-1", CALLS)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def click(approve: bool) -> None:
        barrier.wait()
        try:
            state.begin(approve)
            wins.append(approve)
        except ApprovalError:
            pass

    threads = [threading.Thread(target=click, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(wins) == 1


def test_approval_failure_reopens_only_when_retryable() -> None:
    state = ApprovalState("run-1", CALLS)
    state.begin(False, "not in prod")
    state.failed("server down")
    assert state.open
    state.begin(False, "not in prod")
    state.failed("rejected", retryable=False)
    assert state.state == "failed" and not state.open


def test_approval_answers_every_pending_call() -> None:
    answers = ApprovalState("run-1", CALLS).answers(False, "nope")
    assert answers == [
        {"type": "approval", "tool_call_id": "call_1", "approve": False, "reason": "nope"},
        {"type": "approval", "tool_call_id": "call_2", "approve": False, "reason": "nope"},
    ]


def test_throttle_caps_the_rate() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    sent = 0
    for _ in range(10_000):  # 10,000 chunks over one second
        now[0] += 0.0001
        sent += throttle.ready()
    assert 9 <= sent <= 11
    assert throttle.wait_time() <= 0.1
    with pytest.raises(ValueError):
        Throttle(0)


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
