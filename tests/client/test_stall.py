"""The stall watchdog: every live chain on a clock shares one thread, which ends with the last.

(The warning a silent follower gets is `test_follower.test_stall_warning_comes_and_goes`.)
"""

from __future__ import annotations

import threading
import time

from letta_nb.core.clock import ManualClock
from letta_nb.run import stall

BOUND = 10.0


class Chain:
    """A watched chain: counts the looks, settles when told."""

    def __init__(self, interval: float = 1.0) -> None:
        self.stall_interval = interval
        self.looks = 0
        self.settled = False

    def stall_check(self) -> bool:
        self.looks += 1
        return not self.settled


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "letta-nb-stall-watch" and t.is_alive()]


def _until(cond: object, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _advance(clock: ManualClock, waits: int) -> None:
    """Move time once the watcher sits in its `waits`-th wait (a wait that starts after the
    move would count from the new time)."""
    _until(lambda: len(clock.waits) >= waits, f"the watcher never began wait {waits}")
    clock.advance(1.0)


def test_a_thousand_chains_share_one_thread_that_ends_with_the_last() -> None:
    clock = ManualClock()
    before = len(_watchers())
    chains = [Chain() for _ in range(1000)]
    for chain in chains:
        stall.watch(chain, clock)
    assert len(_watchers()) == before + 1  # not a thousand
    _advance(clock, 1)  # (chains added during the first wait are looked at after the next)
    _advance(clock, 2)
    _until(lambda: all(c.looks >= 1 for c in chains), "every chain is looked at")
    for chain in chains[:-1]:
        chain.settled = True
    _advance(clock, 3)
    _until(lambda: len(stall._watches[id(clock)]._chains) == 1, "settled chains are dropped")
    chains[-1].settled = True
    _advance(clock, 4)
    _until(lambda: id(clock) not in stall._watches, "the watch of an idle clock is forgotten")
    _until(lambda: len(_watchers()) == before, "the thread ended with the last chain")


def test_a_chain_that_wants_a_shorter_interval_wakes_the_watcher() -> None:
    clock = ManualClock()
    slow, quick = Chain(interval=1.0), Chain(interval=0.05)
    stall.watch(slow, clock)
    _until(lambda: clock.waits[-1:] == [1.0], "the watcher sleeps the slow chain's interval")
    stall.watch(quick, clock)  # the watcher does not sit out the slow chain's second
    _until(lambda: clock.waits[-1] == 0.05, "it sleeps the quick chain's interval")
    assert clock.waits == [1.0, 0.05]
    slow.settled = quick.settled = True
    _advance(clock, 2)
    _until(lambda: id(clock) not in stall._watches, "both settled: nothing is watched")


def test_a_chain_added_after_its_watch_went_idle_gets_a_new_thread() -> None:
    clock = ManualClock()
    first = Chain()
    stall.watch(first, clock)
    first.settled = True
    _advance(clock, 1)
    _until(lambda: id(clock) not in stall._watches, "idle")
    second = Chain()
    stall.watch(second, clock)
    _advance(clock, 2)
    _until(lambda: second.looks >= 1, "a new watch looks at the new chain")
    second.settled = True
    _advance(clock, 3)
    _until(lambda: id(clock) not in stall._watches, "idle again")
