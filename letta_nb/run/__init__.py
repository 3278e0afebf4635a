"""The run chain: reading a Letta run to its end, and following a chain of runs.

- `ending.py`: `RunEnd`, the end-of-run rule (once), and `Ending`, how a run ended;
- `reader.py`: `RunReader`, one run read to its end in the caller's thread (holes in the
  seqs, reconnects, the server's word on a run whose frames stop early);
- `replay.py`: `replay`, the one bounded read of stored frames (tails, rebuilds, tables);
- `reconnect.py`: `Backoff` and finding a broken send's run by its otid;
- `follower.py`: `Follower`, the chain's reader thread, listeners, approvals, cancel, detach;
- `stall.py`: the stall watchdog, one thread for every live chain on a clock.

Importing it loads no SDK: the chain talks to a `_protocols.LettaBackend`.
"""

from __future__ import annotations

from .ending import Ending, RunEnd
from .follower import Follower, Policy, Spawn, new_thread, run_seconds
from .reader import RunReader
from .reconnect import Backoff
from .replay import FrameLog, Replayed, replay, stored_frames

__all__ = [
    "Backoff",
    "Ending",
    "Follower",
    "FrameLog",
    "Policy",
    "Replayed",
    "RunEnd",
    "RunReader",
    "Spawn",
    "new_thread",
    "replay",
    "run_seconds",
    "stored_frames",
]
