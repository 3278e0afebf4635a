"""The stall watchdog: every live chain on a clock shares one thread, which ends with the last.

(The warning a silent follower gets is `test_follower.test_stall_warning_comes_and_goes`.)
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

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


class Ticks:
    """Moves a `ManualClock` one watcher interval at a time, each once the watcher sits in a
    wait (a wait that began after the move would count from the new time)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.seen = 0  # waits that began before the last move

    def tick(self, seconds: float = 1.0) -> None:
        _until(lambda: len(self.clock.waits) > self.seen, "the watcher never waited again")
        self.seen = len(self.clock.waits)
        self.clock.advance(seconds)


def test_a_thousand_chains_share_one_thread_that_ends_with_the_last() -> None:
    clock = ManualClock()
    before = len(_watchers())
    chains = [Chain() for _ in range(1000)]
    for chain in chains:
        stall.watch(chain, clock)
    assert len(_watchers()) == before + 1  # not a thousand
    ticks = Ticks(clock)
    ticks.tick()
    _until(lambda: all(c.looks >= 1 for c in chains), "every chain is looked at")
    for chain in chains[:-1]:
        chain.settled = True
    ticks.tick()
    _until(lambda: len(stall._watches[id(clock)]._chains) == 1, "settled chains are dropped")
    chains[-1].settled = True
    ticks.tick()
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
    clock.advance(1.0)  # (the watcher sits in its second wait: the assert above saw it)
    _until(lambda: id(clock) not in stall._watches, "both settled: nothing is watched")


def test_a_chain_let_go_is_not_kept_alive_by_its_watch() -> None:
    """A settled chain the caller dropped is not held for the watcher's next look (a batch's
    finished items would stay in memory for up to a second)."""
    clock = ManualClock()
    kept = Chain()
    stall.watch(kept, clock)
    dropped = Chain()
    stall.watch(dropped, clock)
    gone = weakref.ref(dropped)
    _until(lambda: clock.waits, "the watcher sleeps")
    del dropped
    gc.collect()
    assert gone() is None  # while the watcher sleeps, it holds no chain
    kept.settled = True
    Ticks(clock).tick()
    _until(lambda: id(clock) not in stall._watches, "idle")


def test_a_chain_added_after_its_watch_went_idle_gets_a_new_thread() -> None:
    clock = ManualClock()
    ticks = Ticks(clock)
    first = Chain()
    stall.watch(first, clock)
    first.settled = True
    ticks.tick()
    _until(lambda: id(clock) not in stall._watches, "idle")
    second = Chain()
    stall.watch(second, clock)
    ticks.tick()
    _until(lambda: second.looks >= 1, "a new watch looks at the new chain")
    second.settled = True
    ticks.tick()
    _until(lambda: id(clock) not in stall._watches, "idle again")


class Broken(Chain):
    def stall_check(self) -> bool:
        self.looks += 1
        raise RuntimeError("a view's listener blew up")


def test_a_chain_whose_check_fails_is_dropped_and_the_others_are_still_watched() -> None:
    clock = ManualClock()
    broken, fine = Broken(), Chain()
    stall.watch(broken, clock)
    stall.watch(fine, clock)
    ticks = Ticks(clock)
    ticks.tick()
    _until(lambda: broken.looks == 1 and fine.looks == 1, "both looked at")
    ticks.tick()
    _until(lambda: fine.looks == 2, "the watcher lives on")
    assert broken.looks == 1  # dropped after its failure
    fine.settled = True
    ticks.tick()
    _until(lambda: id(clock) not in stall._watches, "idle")


def test_chains_collected_while_watched_leave_a_working_watch() -> None:
    """The weak set may empty itself between two looks (its chains collected): the watcher
    ends cleanly and the next chain gets a watcher (it once died on `min()` of nothing)."""
    clock = ManualClock()
    for _ in range(50):
        stall.watch(Chain(), clock)  # nobody keeps them: gone at once, maybe mid-look
    gc.collect()

    def ended() -> bool:
        clock.advance(1.0)  # (in case the watcher began a wait before they were all gone)
        return id(clock) not in stall._watches

    _until(ended, "the emptied watch ended")
    assert not [t for t in _watchers() if t.ident and not t.is_alive()]
    later = Chain()
    stall.watch(later, clock)
    ticks = Ticks(clock)
    ticks.seen = len(clock.waits)
    ticks.tick()
    _until(lambda: later.looks >= 1, "the next chain is looked at")
    later.settled = True
    ticks.tick()
    _until(lambda: id(clock) not in stall._watches, "idle")
