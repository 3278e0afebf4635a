"""The status of a run chain as the notebook follows it (one enum for every front end).

A chain is a send and each approval's new run. Its status is the newest run's server status
while that is known, plus what only the client can know: still starting, waiting for a human,
detached here, or broken here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ChainStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    REQUIRES_APPROVAL = "requires_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Not read to its end: the server no longer has every frame, or they never arrived.
    INCOMPLETE = "incomplete"
    #: This kernel stopped following; the run goes on on the server.
    DETACHED = "detached"
    #: This kernel could not follow (one-line `error` says why); the run may go on.
    ERROR = "error"


#: The chain reads nothing more until someone acts (wait() returns).
SETTLED: Final = frozenset(
    {
        ChainStatus.REQUIRES_APPROVAL,
        ChainStatus.COMPLETED,
        ChainStatus.FAILED,
        ChainStatus.CANCELLED,
        ChainStatus.INCOMPLETE,
        ChainStatus.DETACHED,
        ChainStatus.ERROR,
    }
)
#: The chain is over here: no approval to answer, no reader (a re-run may revive
#: detached / error chains from their cursor).
OVER: Final = SETTLED - {ChainStatus.REQUIRES_APPROVAL}
#: A reader is (or is about to be) reading.
LIVE: Final = frozenset({ChainStatus.STARTING, ChainStatus.RUNNING})
#: The chain's outcome is known on the server: re-running the cell shows it from the cache.
FINISHED: Final = frozenset(
    {
        ChainStatus.COMPLETED,
        ChainStatus.FAILED,
        ChainStatus.CANCELLED,
        ChainStatus.REQUIRES_APPROVAL,
    }
)
