"""Reconnecting: the one backoff policy, and finding the run of a send whose stream broke.

Every reader of a run (the live reader, tail reads, replays) waits with `Backoff` between
broken connections: bounded (`attempts` failures in a row without progress), jittered,
exponential, and interruptible by the reader's stop event. A send is never re-sent blindly: a
send that broke before its first frame is found again by its otid (`find_sent_run`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.clock import SYSTEM, Clock, epoch
from ..core.errors import LettaNbError, ServerUnavailable, StreamInterrupted

if TYPE_CHECKING:
    from .._protocols import LettaBackend


@dataclass
class Backoff:
    """Waits between reconnects: `base * 2**(attempt-1)`, capped, with jitter, at most
    `attempts` in a row (a connection that brings data resets the count)."""

    base: float = 0.1
    cap: float = 2.0
    attempts: int = 20
    clock: Clock = field(default=SYSTEM)

    def delay(self, attempt: int) -> float:
        if attempt <= 0:
            return 0.0
        return min(self.cap, self.base * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)

    def exhausted(self, attempt: int) -> bool:
        return attempt > self.attempts

    def wait(self, attempt: int, stop: threading.Event) -> bool:
        """Sleep before attempt `attempt` (none before the first); True if `stop` was set."""
        if attempt <= 0:
            return stop.is_set()
        return self.clock.wait(stop, self.delay(attempt))


def find_sent_run(
    backend: LettaBackend,
    *,
    agent_id: str,
    otid: str | None,
    sent_at: float,
    known: Iterable[str],
    delays: Iterable[float],
    stop: threading.Event,
    clock: Clock = SYSTEM,
) -> str | None:
    """The run a broken send started, if the server has it: looked up in the agent's newest
    runs (created since the send), a few times (`delays`), the send's otid deciding.

    None when no such run shows up: the caller may then re-send with the same otid.
    """
    skip = set(known)
    for delay in delays:
        if clock.wait(stop, delay):
            return None
        try:
            runs = backend.list_runs(agent_id=agent_id, limit=10, order="desc")
        except (StreamInterrupted, ServerUnavailable):
            continue
        fresh = [
            r
            for r in runs
            if r.get("id") not in skip and epoch(r.get("created_at")) >= sent_at - 5.0
        ]
        rid = own_run(backend, fresh, otid) if fresh else None
        if rid is not None:
            return rid
    return None


def own_run(backend: LettaBackend, fresh: list[dict[str, Any]], otid: str | None) -> str | None:
    """The oldest candidate whose messages carry this send's otid.

    A run sent just before ours (the previous cell) is a candidate too: without the otid check
    it would be adopted and shown as this send's answer. Runs whose messages carry no otid at
    all (a server that keeps none or lists none, or messages not written yet) stay eligible.
    """
    if otid is None:
        return str(fresh[-1]["id"])  # the oldest new one: ours was sent first
    unknown = None
    for run in reversed(fresh):
        try:
            messages = backend.run_messages(run["id"])
        except LettaNbError:
            messages = []  # no message listing: the run stays eligible
        otids = {m.get("otid") for m in messages} - {None}
        if otid in otids:
            return str(run["id"])
        if not otids and unknown is None:
            unknown = str(run["id"])
    return unknown
