"""The end-of-run rule, once: when a run's frames say it is over, and how it ended.

Letta stores a run's frames, then `stop_reason`, `usage_statistics` and `[DONE]`; an error
ends it with an error frame, a cancel with `stop_reason: cancelled`. So a run is over after an
error frame, after `stop_reason: cancelled`, or after the usage frame that follows its stop
reason. The live reader, tail reads and every replay feed their control frames to a `RunEnd`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.chunks import Chunk
from ..core.status import ChainStatus
from ..protocol import MessageType as MT
from ..protocol import StopReason, status_for_stop_reason

#: Frames the end-of-run rule looks at (the others are content).
CONTROL = frozenset({MT.STOP_REASON, MT.USAGE, MT.ERROR})


class RunEnd:
    """What a run's frames say about its end, fed every accepted control frame."""

    __slots__ = ("error", "over", "stop_reason")

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.error: Chunk | None = None
        self.over = False

    def see(self, acc: Chunk) -> bool:
        """Take one frame into account; True once the run is over."""
        kind = acc.message_type
        if kind == MT.STOP_REASON:
            self.stop_reason = str(acc.data.get("stop_reason"))
            self.over = self.stop_reason == StopReason.CANCELLED
        elif kind == MT.ERROR:
            self.error = acc
            self.over = True
        elif kind == MT.USAGE and self.stop_reason is not None:
            self.over = True
        return self.over

    @property
    def status(self) -> ChainStatus:
        """The run's status by its frames (Letta's stop-reason table; an error fails it)."""
        if self.stop_reason is None and self.error is None:
            return ChainStatus.FAILED  # over without a stop reason: nothing says it worked
        status = ChainStatus(status_for_stop_reason(self.stop_reason or StopReason.ERROR).value)
        if self.error is not None and status == ChainStatus.COMPLETED:
            return ChainStatus.FAILED
        return status

    @property
    def error_text(self) -> str | None:
        if self.error is None:
            return None
        return " ".join(str(self.error.data.get("message") or "the run failed").split())


@dataclass(frozen=True)
class Ending:
    """How one run ended, as its chain should show it."""

    status: ChainStatus
    stop_reason: str | None = None
    error: str | None = None
    #: A lasting one-line warning (e.g. what an incomplete run is missing).
    notice: str | None = None


DETACHED = Ending(ChainStatus.DETACHED)
