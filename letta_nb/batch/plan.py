"""The scheduler's decisions, with no threads and no clock of its own (times are passed in).

`ReadyQueue`: which items may be launched next and from when (a resume of an item already
on the server goes before a new send). `Pace`: how many items may be in flight: the
concurrency asked for, halved on a 429 (and no send at all until its `Retry-After` has passed),
grown back by one after each run of successes, so a rate-limited batch slows down instead of
failing items. `Probe`: when to ask a paused batch's server again whether it is back.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

#: Rank of a launch: items the server already has first, then new sends.
RESUME, SEND = 0, 1


@dataclass
class ReadyQueue:
    """Items waiting for a slot: (ready time, rank, arrival) order, each item once."""

    _heap: list[tuple[float, int, int, int]] = field(default_factory=list)
    _queued: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, pos: int) -> bool:
        return pos in self._queued

    def push(self, pos: int, *, at: float = 0.0, rank: int = SEND) -> None:
        """Queue `pos`, ready from `at` (a later push replaces an earlier one)."""
        entry = (at, rank, next(self._order))
        self._queued[pos] = entry
        heapq.heappush(self._heap, (*entry, pos))

    def discard(self, pos: int) -> None:
        self._queued.pop(pos, None)

    def _top(self) -> tuple[float, int, int, int] | None:
        heap = self._heap
        while heap:
            at, rank, order, pos = heap[0]
            if self._queued.get(pos) == (at, rank, order):
                return heap[0]
            heapq.heappop(heap)  # replaced or discarded since
        return None

    def pop_ready(self, now: float, count: int) -> list[int]:
        """Up to `count` items ready at `now`, best first."""
        out: list[int] = []
        while len(out) < count:
            top = self._top()
            if top is None or top[0] > now:
                break
            heapq.heappop(self._heap)
            del self._queued[top[3]]
            out.append(top[3])
        return out

    def next_at(self) -> float | None:
        """When the first queued item becomes ready (None: nothing queued)."""
        top = self._top()
        return None if top is None else top[0]


@dataclass
class Pace:
    """How many items may be in flight now; a 429 halves it and holds new sends."""

    concurrency: int
    #: Wait after a 429 without `Retry-After`: base * 2**(n-1) for the n-th in a row, capped.
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    limit: int = 0
    hold_until: float = 0.0
    limited_in_a_row: int = 0
    _streak: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.limit = self.limit or self.concurrency

    def slots(self, now: float, in_flight: int) -> int:
        """How many more items may start at `now`."""
        if now < self.hold_until:
            return 0
        return max(0, self.limit - in_flight)

    def limited(self, now: float, retry_after: float | None) -> float:
        """A 429: returns when sends may go again (monotonic time, as `now`)."""
        if now >= self.hold_until:  # the first 429 of a window: 16 at once halve it once
            self.limit = max(1, math.ceil(self.limit / 2))
            self.limited_in_a_row += 1
        self._streak = 0
        if retry_after is None:
            retry_after = min(
                self.backoff_cap, self.backoff_base * 2 ** (self.limited_in_a_row - 1)
            )
        self.hold_until = max(self.hold_until, now + retry_after)
        return self.hold_until

    def succeeded(self) -> None:
        """An item ran without a rate limit: after `limit` of those, one more slot."""
        self.limited_in_a_row = 0
        if self.limit >= self.concurrency:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0

    @property
    def slowed(self) -> bool:
        return self.limit < self.concurrency


@dataclass
class Probe:
    """When a paused batch asks its server again: 0.5 s, doubling, at most every `cap` s."""

    base: float = 0.5
    cap: float = 10.0
    attempts: int = 0
    next_at: float | None = None

    def failed(self, now: float) -> float:
        self.attempts += 1
        self.next_at = now + min(self.cap, self.base * 2 ** (self.attempts - 1))
        return self.next_at

    def reset(self) -> None:
        self.attempts = 0
        self.next_at = None
