"""ApprovalState: an approval request is answered once, whatever races it."""

from __future__ import annotations

import threading

import pytest

from letta_nb.core.approval import ApprovalState
from letta_nb.core.errors import ApprovalError

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
