"""SQLite storage: agents, conversations, tools, runs, messages, steps and the per-run SSE
frame log.

Every call is synchronous and meant to run on a worker thread, never on the event loop (the
engine hands calls to its executors): each thread gets its own connection, reads run in
parallel under WAL, and writes queue on one Python lock shared with the ``FrameWriter`` (so
they wake at once instead of in SQLite's sleeping busy handler). A write that finds the
database locked by another connection is retried with backoff for a bounded time.

Every message belongs to one history: the agent's default history (``conversation_id`` NULL)
or one conversation. A fork copies the source's message rows into the new conversation with
the same ids (``copied`` = 1): they are the same message objects, listed once agent-wide. A
pending approval belongs to its history too (``agents.pending`` or ``conversations.pending``).

Frames are stored as their final bytes (run_id and seq_id already injected), keyed by
``(run_id, seq)``, so a replay is one range scan plus a concatenation and a resume at any
position is an index seek. The ``FrameWriter`` commits them in batches *before* any reader is
told about them, and it never commits a frame that does not directly follow the run's last
committed one: a run's stored frames are always ``1..N`` without holes.

The database, its WAL/SHM files and its lock file are private (0600), and one server at a time
may open a database (``DbLock``): a second one would close the first one's live runs as orphans.
"""

from .files import DatabaseInUse, DbLock, private_dir, private_file
from .framewriter import CommitResult, FrameGap, FramePart, FrameWriter, insert_batch
from .rows import Page
from .sqlite import BUSY_TIMEOUT_MS, WRITE_RETRY_SECONDS, connect, is_transient, retry_transient
from .store import Store

__all__ = [
    "BUSY_TIMEOUT_MS",
    "WRITE_RETRY_SECONDS",
    "CommitResult",
    "DatabaseInUse",
    "DbLock",
    "FrameGap",
    "FramePart",
    "FrameWriter",
    "Page",
    "Store",
    "connect",
    "insert_batch",
    "is_transient",
    "private_dir",
    "private_file",
    "retry_transient",
]
