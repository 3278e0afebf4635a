"""The clock seam: everything that waits on time asks a `Clock`, so tests never need to sleep.

The run chain (reader, reconnect backoff, stall watchdog), the backend's retries and the cursor
store read `monotonic()` / `time()` and wait with `wait(event, seconds)` (an interruptible
sleep: a set event ends it early). `SYSTEM` is the real clock. `ManualClock` is a clock a test
moves by hand (`advance`), in the spirit of `httpx.MockTransport`: waits end when the test
says time has passed, or at once with `instant=True` (backoffs cost nothing).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Final, Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Epoch seconds (timestamps shown to people and stored in cursors)."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Sleep up to `timeout` seconds or until `event` is set; True if it was set."""
        ...


class SystemClock:
    """The real clock (`time.monotonic`, `time.time`, `Event.wait`)."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


SYSTEM: Final = SystemClock()


class ManualClock:
    """A clock that moves only when told: `advance(seconds)` wakes the waits that are due.

    With `instant=True` every wait returns at once (its timeout is added to the clock), for
    code whose waits are backoffs a test does not want to sit through. A wait also ends as soon
    as its event is set by another thread (checked every few milliseconds of real time).
    """

    def __init__(self, start: float = 1000.0, *, epoch: float = 1.7e9, instant: bool = False):
        self._now = start
        self._epoch = epoch - start
        self.instant = instant
        self._cond = threading.Condition()
        #: Every timeout passed to `wait`, in order (what a test asserts about backoffs).
        self.waits: list[float] = []

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def time(self) -> float:
        with self._cond:
            return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += max(0.0, seconds)
            self._cond.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._cond:
            self.waits.append(timeout)
            if self.instant:
                if not event.is_set():
                    self._now += max(0.0, timeout)
                    self._cond.notify_all()
                return event.is_set()
            deadline = self._now + max(0.0, timeout)
            while not event.is_set() and self._now < deadline:
                self._cond.wait(0.005)  # `event` may be set by a thread that knows no clock
            return event.is_set()


def epoch(value: object) -> float:
    """A server timestamp (ISO, maybe without zone: the real server mixes both) → epoch s.

    0.0 for a missing or unreadable value (so it sorts before everything).
    """
    if isinstance(value, datetime):
        dt = value
    elif value:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return 0.0
    else:
        return 0.0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
