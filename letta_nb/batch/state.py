"""One item of a batch: its state machine and what is stored of it (per item, never per frame).

    pending → starting → running → completed | failed | cancelled | incomplete
                  ↑        ↕ (an approval: requires_approval, then running again)
     a resend with the same otid
     (after a kernel restart)          retry(): a new attempt, from pending

`pending`: never sent (or a send the server refused, e.g. a 429: nothing started). `starting`:
sent with the item's otid, its run not named yet (after a kernel restart it is sent again with
the same otid, which the server re-attaches). A finished item keeps its answer text and
counters, not its transcript.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from ..core.status import ChainStatus

PENDING: Final = "pending"
STARTING: Final = ChainStatus.STARTING.value
RUNNING: Final = ChainStatus.RUNNING.value
WAITING: Final = ChainStatus.REQUIRES_APPROVAL.value
DETACHED: Final = ChainStatus.DETACHED.value
COMPLETED: Final = ChainStatus.COMPLETED.value
FAILED: Final = ChainStatus.FAILED.value
CANCELLED: Final = ChainStatus.CANCELLED.value
INCOMPLETE: Final = ChainStatus.INCOMPLETE.value

#: Every status an item can have, in the order a view lists them.
STATUSES: Final = (
    PENDING,
    STARTING,
    RUNNING,
    WAITING,
    DETACHED,
    COMPLETED,
    FAILED,
    CANCELLED,
    INCOMPLETE,
)
#: The item's result is final here (`Batch.retry` may start a new attempt).
OVER: Final = frozenset({COMPLETED, FAILED, CANCELLED, INCOMPLETE})
#: Results `retry(failed=True)` sends again.
RETRYABLE: Final = frozenset({FAILED, INCOMPLETE})
#: Still to be sent or read: the runner owes them work.
OWED: Final = frozenset({PENDING, STARTING, RUNNING})


class BatchStatus(StrEnum):
    """What a whole batch is doing (`Batch.status`; its items have the statuses above)."""

    RUNNING = "running"
    PAUSED = "paused"  # the server cannot be reached: it goes on when the server is back
    WAITING = "waiting"  # only approvals left
    DETACHED = "detached"
    DONE = "done"


#: Nothing changes in a batch with this status until someone acts (answer, retry, resume).
BATCH_SETTLED: Final = frozenset({BatchStatus.DONE, BatchStatus.WAITING, BatchStatus.DETACHED})

_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    PENDING: frozenset({STARTING, CANCELLED, FAILED}),
    STARTING: frozenset({PENDING, RUNNING, WAITING, DETACHED, *OVER}),
    RUNNING: frozenset({WAITING, DETACHED, *OVER}),
    WAITING: frozenset({RUNNING, DETACHED, *OVER}),
    DETACHED: frozenset({STARTING, RUNNING, WAITING, *OVER}),
    COMPLETED: frozenset({PENDING}),
    FAILED: frozenset({PENDING}),
    CANCELLED: frozenset({PENDING}),
    INCOMPLETE: frozenset({PENDING}),
}


class BadTransition(RuntimeError):
    """A change of state the item's lifecycle does not have (a bug, never user input)."""


_STORED = (
    "digest",
    "status",
    "attempt",
    "conversation_id",
    "runs",
    "answer",
    "stop_reason",
    "tokens",
    "duration",
    "error",
    "started_at",
    "ended_at",
)


@dataclass(slots=True)
class ItemState:
    """What the batch keeps of one item (kernel memory and `cursors.db`)."""

    pos: int
    digest: str
    status: str = PENDING
    #: Deliberate attempts so far (`retry` adds one): part of the item's otid.
    attempt: int = 0
    conversation_id: str | None = None
    #: The item's run chain (a send, then each approval answer's run), oldest first.
    runs: list[str] = field(default_factory=list)
    answer: str | None = None
    stop_reason: str | None = None
    tokens: int | None = None
    #: Seconds the item's runs were worked on (approval waits excluded).
    duration: float | None = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: Not stored: times this attempt was resumed after a transient failure.
    resumes: int = 0
    #: Not stored: the batch cancelled it, or its time limit did.
    cancel_reason: str | None = None

    @property
    def run_id(self) -> str | None:
        return self.runs[-1] if self.runs else None

    @property
    def over(self) -> bool:
        return self.status in OVER

    def move(self, status: str) -> None:
        """Change state, refusing a change the lifecycle does not have."""
        if status == self.status:
            return
        if status not in _ALLOWED.get(self.status, frozenset()):
            raise BadTransition(f"item {self.pos}: {self.status} -> {status}")
        self.status = status

    def add_run(self, run_id: str | None) -> bool:
        if run_id and run_id not in self.runs:
            self.runs.append(run_id)
            return True
        return False

    def reset(self) -> None:
        """A new attempt (`retry`): a new otid and conversation, no result yet."""
        self.move(PENDING)
        self.attempt += 1
        self.conversation_id = None
        self.runs = []
        self.answer = self.stop_reason = self.error = None
        self.tokens = None
        self.duration = None
        self.started_at = self.ended_at = None
        self.resumes = 0
        self.cancel_reason = None

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STORED}

    @classmethod
    def from_record(cls, pos: int, rec: Mapping[str, Any]) -> ItemState:
        item = cls(pos, str(rec.get("digest", "")))
        status = rec.get("status")
        item.status = str(status) if status in _ALLOWED else PENDING
        item.attempt = int(rec.get("attempt") or 0)
        item.conversation_id = rec.get("conversation_id")
        item.runs = [str(r) for r in rec.get("runs") or []]
        item.answer = rec.get("answer")
        item.stop_reason = rec.get("stop_reason")
        tokens = rec.get("tokens")
        item.tokens = int(tokens) if isinstance(tokens, int) else None
        duration = rec.get("duration")
        item.duration = float(duration) if isinstance(duration, int | float) else None
        item.error = rec.get("error")
        item.started_at = rec.get("started_at")
        item.ended_at = rec.get("ended_at")
        if item.status == STARTING and item.runs:
            item.status = RUNNING  # the run was named before the state was written
        return item
