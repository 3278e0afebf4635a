"""The stall watchdog: one thread per clock looks at every live chain for silence.

A chain that gets no data for its `stall_after` seconds gets a warning (its `stall_check`).
One watchdog thread per chain would cost a thread start and a GIL hand-off per run; a batch of
a thousand short items would pay that a thousand times. So every chain on the same clock shares
one thread, which sleeps the shortest interval any of them asks for and ends when none is left
(tests with a `ManualClock` get a watcher of their own, woken by `advance`).
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from typing import Protocol

from ..core.clock import Clock


class Watched(Protocol):
    """A chain the watchdog looks at (`Follower`)."""

    @property
    def stall_interval(self) -> float:
        """How often it wants to be looked at (seconds)."""
        ...

    def stall_check(self) -> bool:
        """Warn if it has been silent too long; False once it is settled (not watched any
        more)."""
        ...


class StallWatch:
    """The chains of one clock and the thread that looks at them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        #: Weak: a chain that settled and was let go is not kept alive for a last look.
        self._chains: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a chain that wants a shorter interval came
        self._interval = 1.0
        self._thread: threading.Thread | None = None

    def add(self, chain: Watched) -> None:
        with self._lock:
            self._chains.add(chain)
            if chain.stall_interval < self._interval:
                self._wake.set()
            if self._thread is None:
                self._interval = chain.stall_interval
                self._thread = threading.Thread(
                    target=contextvars.Context().run,  # a fresh context: nobody's cell
                    args=(self._run,),
                    name="letta-nb-stall-watch",
                    daemon=True,
                )
                self._thread.start()

    @property
    def idle(self) -> bool:
        """No chain to look at and no thread (the next `add` starts one)."""
        return not self._chains and self._thread is None

    def _run(self) -> None:
        while True:
            with self._lock:
                chains = list(self._chains)  # strong for a moment: a weak set can empty itself
                if not chains:
                    self._thread = None
                    break
                self._interval = min(c.stall_interval for c in chains)
                self._wake.clear()
            del chains
            self.clock.wait(self._wake, self._interval)  # holding no chain
            with self._lock:
                chains = list(self._chains)
            settled = [chain for chain in chains if not _still_live(chain)]
            with self._lock:
                for chain in settled:
                    self._chains.discard(chain)
            del chains, settled
        _forget(self)


def _still_live(chain: Watched) -> bool:
    """`chain.stall_check()`; a chain whose check fails is not looked at again (the thread
    goes on for the others)."""
    try:
        return chain.stall_check()
    except Exception:
        return False


_watches: dict[int, StallWatch] = {}  # id(clock) → its watch, while it has chains
_watches_lock = threading.Lock()


def watch(chain: Watched, clock: Clock) -> None:
    """Look at `chain` (on `clock`) until it settles."""
    with _watches_lock:
        found = _watches.get(id(clock))
        if found is None or found.clock is not clock:
            found = _watches[id(clock)] = StallWatch(clock)
        found.add(chain)


def _forget(stall: StallWatch) -> None:
    """A watch whose last chain settled, from its ending thread (chains are only added under
    `_watches_lock`, so none can come between the check and the removal)."""
    with _watches_lock:
        if _watches.get(id(stall.clock)) is stall and stall.idle:
            del _watches[id(stall.clock)]
