"""Rate limit for front-end updates: at most `max_hz` renders a second, whatever the chunk rate.

Browsers and the Jupyter server choke on thousands of comm messages a second; a transcript that
changes 30,000 times a second needs at most ten redraws to look live.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    __slots__ = ("_clock", "_last", "interval")

    def __init__(self, max_hz: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if max_hz <= 0:
            raise ValueError("max_hz must be positive")
        self.interval = 1.0 / max_hz
        self._clock = clock
        self._last = float("-inf")

    def ready(self) -> bool:
        """True (and the window restarts) when an update may go out now."""
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until the next update may go out (0 when it may go now)."""
        return max(0.0, self._last + self.interval - self._clock())
