"""The clock seam: a manual clock moves only when told, and a wait ends at its event."""

from __future__ import annotations

import threading

from letta_nb.core.clock import SYSTEM, ManualClock, epoch


def test_a_manual_wait_ends_when_the_test_moves_time() -> None:
    clock = ManualClock(start=10.0)
    stop = threading.Event()
    done: list[bool] = []
    waiter = threading.Thread(target=lambda: done.append(clock.wait(stop, 5.0)))
    waiter.start()
    while not clock.waits:  # the waiter is inside wait()
        threading.Event().wait(0.001)
    clock.advance(4.0)
    waiter.join(0.05)
    assert waiter.is_alive()  # 4 of 5 seconds: still waiting
    clock.advance(1.0)
    waiter.join(5.0)
    assert done == [False] and clock.monotonic() == 15.0


def test_a_set_event_ends_a_manual_wait_at_once() -> None:
    clock = ManualClock()
    stop = threading.Event()
    threading.Timer(0.01, stop.set).start()
    assert clock.wait(stop, 3600.0) is True and clock.monotonic() == 1000.0


def test_an_instant_clock_adds_every_wait_and_records_it() -> None:
    clock = ManualClock(start=0.0, epoch=100.0, instant=True)
    never = threading.Event()
    assert clock.wait(never, 1.5) is False and clock.wait(never, 2.5) is False
    assert clock.monotonic() == 4.0 and clock.time() == 104.0 and clock.waits == [1.5, 2.5]


def test_the_system_clock_and_timestamps() -> None:
    assert SYSTEM.wait(threading.Event(), 0.0) is False and SYSTEM.monotonic() > 0
    assert epoch("2026-11-29T14:08:33Z") == epoch("2026-11-29 14:08:33")  # naive means UTC
    assert epoch(None) == epoch("not a date") == 0.0
