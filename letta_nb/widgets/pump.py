"""Who flushes views: one shared daemon thread for all views, or inline (tests, --wait).

Follower listeners only mark a view dirty and wake the pump; the pump flushes each view at
most `max_hz` times a second (its own `Throttle`) and at once on a status change. Keeping every
widget mutation on this one thread avoids races between reader threads and traitlets.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)


class Pumped(Protocol):
    def due_in(self) -> float | None:
        """0 to flush now, > 0 seconds to wait, None when there is nothing to do."""

    def pump_tick(self) -> None:
        """Flush (in the view's own cell context)."""


class InlinePump:
    """Flush on the notifying thread, still throttled: for tests and blocking waits."""

    def wake(self, view: Pumped) -> None:
        if view.due_in() == 0:
            view.pump_tick()

    def remove(self, view: Pumped) -> None:
        return None


class ThreadPump:
    """One daemon thread serving every live view; exits after `idle_exit` s with none."""

    def __init__(self, *, idle_exit: float = 30.0, max_sleep: float = 1.0) -> None:
        self._cond = threading.Condition()
        self._views: dict[int, Pumped] = {}
        self._thread: threading.Thread | None = None
        self._idle_exit = idle_exit
        self._max_sleep = max_sleep

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self, view: Pumped) -> None:
        with self._cond:
            self._views[id(view)] = view
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="letta-nb-pump", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, view: Pumped) -> None:
        with self._cond:
            self._views.pop(id(view), None)

    def _due(self) -> tuple[list[Pumped], float | None]:
        due: list[Pumped] = []
        sleep: float | None = None
        for key, view in list(self._views.items()):
            try:
                delay = view.due_in()
            except Exception:  # a broken view must not stop the others
                log.exception("letta_nb view failed; dropping it from the pump")
                delay = None
            if delay is None:
                del self._views[key]
            elif delay <= 0:
                due.append(view)
            else:
                sleep = delay if sleep is None else min(sleep, delay)
        return due, sleep

    def _loop(self) -> None:
        idle = 0.0
        while True:
            with self._cond:
                due, sleep = self._due()
                if not due:
                    if not self._views:
                        if idle >= self._idle_exit:
                            self._thread = None
                            return
                        self._cond.wait(timeout=self._max_sleep)
                        idle += self._max_sleep
                        continue
                    self._cond.wait(timeout=min(sleep or self._max_sleep, self._max_sleep))
                    continue
            idle = 0.0
            for view in due:
                try:
                    view.pump_tick()
                except Exception:
                    log.exception("letta_nb view flush failed")
                    self.remove(view)


_shared: ThreadPump | None = None
_shared_lock = threading.Lock()


def shared_pump() -> ThreadPump:
    """The process-wide pump every RunView uses by default."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadPump()
        return _shared
