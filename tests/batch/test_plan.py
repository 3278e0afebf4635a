"""The scheduler's decisions: the queue's order, the 429 pace (halve once per window, hold until
Retry-After, grow back), the paused batch's probe intervals. Times are passed in."""

from __future__ import annotations

import pytest

from letta_nb.batch.plan import RESUME, SEND, Pace, Probe, ReadyQueue


def test_the_queue_serves_ready_items_resumes_first_each_once() -> None:
    q = ReadyQueue()
    q.push(3, rank=SEND)
    q.push(1, rank=SEND)
    q.push(7, rank=RESUME)
    q.push(9, at=50.0, rank=RESUME)  # not ready before t=50
    assert q.pop_ready(10.0, 2) == [7, 3]  # resumes first, then in arrival order
    q.push(1, at=20.0)  # a later push replaces the earlier one
    assert q.pop_ready(10.0, 5) == [] and len(q) == 2 and q.next_at() == 20.0
    q.discard(1)
    assert q.next_at() == 50.0 and 1 not in q
    assert q.pop_ready(60.0, 5) == [9] and not q and q.next_at() is None


def test_a_429_halves_the_pace_once_and_holds_sends_until_retry_after() -> None:
    pace = Pace(16)
    assert pace.slots(0.0, 10) == 6
    assert pace.limited(100.0, 5.0) == 105.0
    for _ in range(15):  # the other 15 in flight answer 429 too, in the same window
        pace.limited(100.5, 5.0)
    assert pace.limit == 8 and pace.slowed
    assert pace.hold_until == 105.5  # the last 429's Retry-After counts
    assert pace.slots(105.4, 0) == 0  # nothing goes before it
    assert pace.slots(105.5, 3) == 5
    pace.limited(106.0, 2.0)  # a new window: halved again
    assert pace.limit == 4 and pace.hold_until == 108.0


def test_the_pace_grows_back_after_runs_of_successes_and_backs_off_without_retry_after() -> None:
    pace = Pace(4)
    assert pace.limited(0.0, None) == 1.0  # no Retry-After: 1 s, then 2 s, 4 s...
    assert pace.limited(1.0, None) == 3.0
    assert pace.limit == 1
    pace.succeeded()
    assert pace.limit == 2
    pace.succeeded()
    pace.succeeded()
    assert pace.limit == 3
    for _ in range(10):
        pace.succeeded()
    assert pace.limit == 4 and not pace.slowed  # never above what was asked for
    assert pace.limited(100.0, None) == 101.0  # successes reset the backoff


def test_a_pace_needs_one_slot_and_the_probe_backs_off_to_its_cap() -> None:
    with pytest.raises(ValueError):
        Pace(0)
    probe = Probe(base=0.5, cap=4.0)
    assert [probe.failed(0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    probe.reset()
    assert probe.next_at is None and probe.failed(10.0) == 10.5
