"""The item's lifecycle: only the changes it has, what is stored of an item and read back."""

from __future__ import annotations

import pytest

from letta_nb.batch.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STARTING,
    WAITING,
    BadTransition,
    ItemState,
)


def test_the_lifecycle_refuses_what_it_does_not_have() -> None:
    item = ItemState(0, "d")
    with pytest.raises(BadTransition):
        item.move(COMPLETED)  # never sent: cannot be complete
    for step in (STARTING, RUNNING, WAITING, RUNNING, COMPLETED):
        item.move(step)
    with pytest.raises(BadTransition):
        item.move(RUNNING)  # over: only a retry starts it again
    item.move(COMPLETED)  # the same state again is no change
    ItemState(1, "d").move(CANCELLED)  # an unsent item can be cancelled (never sent)


def test_a_retry_is_a_new_attempt_with_no_result() -> None:
    item = ItemState(2, "d", status=FAILED, attempt=0, conversation_id="conv-1", runs=["run-1"])
    item.answer, item.error, item.tokens, item.duration = "x", "boom", 12, 1.5
    item.reset()
    assert (item.status, item.attempt, item.runs, item.conversation_id) == (PENDING, 1, [], None)
    assert item.answer is item.error is item.tokens is item.duration is None


def test_what_is_stored_reads_back() -> None:
    item = ItemState(5, "dig", status=COMPLETED, attempt=2, conversation_id="conv-9", runs=["r1"])
    item.answer, item.stop_reason, item.tokens, item.duration = "an answer", "end_turn", 40, 2.25
    item.error, item.started_at, item.ended_at = None, 10.0, 12.5
    back = ItemState.from_record(5, item.to_record())
    assert back == item
    assert set(item.to_record()) >= {"status", "runs", "answer", "attempt", "conversation_id"}
    assert "resumes" not in item.to_record()  # transient counters are not stored


def test_a_stored_item_whose_run_was_named_is_running_and_garbage_is_pending() -> None:
    named = ItemState.from_record(0, {"digest": "d", "status": STARTING, "runs": ["run-1"]})
    assert named.status == RUNNING and named.run_id == "run-1"
    odd = ItemState.from_record(1, {"digest": "d", "status": "exploded", "tokens": "many"})
    assert odd.status == PENDING and odd.tokens is None
