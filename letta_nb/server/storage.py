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

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    config TEXT NOT NULL,
    pending TEXT,
    last_stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS agents_name ON agents (name, ord);
CREATE TABLE IF NOT EXISTS tools (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    agent_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    completed_at REAL,
    status TEXT NOT NULL,
    stop_reason TEXT,
    background INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    otid_key TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    usage TEXT,
    total_duration_ns INTEGER,
    ttft_ns INTEGER,
    conversation_id TEXT
);
CREATE INDEX IF NOT EXISTS runs_agent ON runs (agent_id, ord);
CREATE INDEX IF NOT EXISTS runs_otid ON runs (agent_id, otid_key);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS run_otids (
    agent_id TEXT NOT NULL,
    otid TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, otid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    agent_id TEXT NOT NULL,
    summary TEXT,
    model TEXT,
    model_settings TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_message_at REAL,
    deleted_at REAL,
    hidden INTEGER NOT NULL DEFAULT 0,
    pending TEXT
);
CREATE INDEX IF NOT EXISTS conversations_agent ON conversations (agent_id, ord);
CREATE TABLE IF NOT EXISTS frames (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_agent ON messages (agent_id, ord);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id, ord);
CREATE INDEX IF NOT EXISTS messages_id ON messages (id);
CREATE TABLE IF NOT EXISTS steps (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_run ON steps (run_id, ord);
CREATE INDEX IF NOT EXISTS steps_id ON steps (id);
"""

# Columns added after the first release: (table, column, declaration).
_MIGRATIONS = (
    ("runs", "ttft_ns", "INTEGER"),
    ("runs", "conversation_id", "TEXT"),
    ("messages", "conversation_id", "TEXT"),
    ("messages", "copied", "INTEGER NOT NULL DEFAULT 0"),
)
# Indexes on migrated columns: created once the columns exist (old databases too).
_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_scope ON messages (agent_id, conversation_id, ord);
CREATE INDEX IF NOT EXISTS runs_conversation ON runs (conversation_id, ord);
"""

BUSY_TIMEOUT_MS = 5000  # SQLite's own wait for a lock held by another connection, per attempt
WRITE_RETRY_SECONDS = 30.0  # then retries with backoff for this long before a write fails
_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 1.0
_PRAGMAS = (
    "synchronous=NORMAL",
    "cache_size=-65536",
    "mmap_size=268435456",
)

log = logging.getLogger(__name__)

# One statement inserts a run's whole batch: the frames travel as one blob plus a JSON list of
# ``offset << 32 | length`` integers, so SQLite does every row in C with the GIL released
# (``executemany`` re-takes the GIL per row: half the throughput, and it stalls the event loop).
_INSERT_BATCH = (
    "INSERT INTO frames (run_id, seq, data) "
    "SELECT ?1, ?2 + key, substr(?3, value >> 32, value & 4294967295) FROM json_each(?4)"
)


def is_transient(exc: BaseException) -> bool:
    """A lock held by another connection: worth retrying (a full disk or I/O error is not)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing, else make it 0600 (SQLite gives its
    WAL and SHM files the database file's mode, so creating the database first covers them)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; an existing directory is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


class DatabaseInUse(RuntimeError):
    """Another server holds this database's lock file."""


class DbLock:
    """An exclusive ``flock`` on ``<db>.lock``, held for the server's lifetime.

    The kernel drops it when the process dies (even on kill -9), so a crashed server never
    blocks its successor, while a live one always does.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> DbLock:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DatabaseInUse(
                f"another letta-nb server (pid {holder}) is using {self.db_path}"
            ) from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def connect(path: Path, busy_timeout_ms: int, pragmas: Sequence[str] = ()) -> sqlite3.Connection:
    """A connection with the server's settings (autocommit; explicit BEGIN where needed)."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    for pragma in (*_PRAGMAS, *pragmas):
        db.execute(f"PRAGMA {pragma}")
    return db


def retry_transient(
    attempt: Callable[[], T],
    *,
    budget: float,
    sleep: Callable[[float], None],
    what: str,
) -> T:
    """Call ``attempt`` until it does not fail with a lock error, for ``budget`` seconds."""
    deadline = time.monotonic() + budget
    delay = _BACKOFF_FIRST
    retries = 0
    while True:
        try:
            result = attempt()
        except sqlite3.OperationalError as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            if retries == 0:
                log.warning("%s: database locked by another connection; retrying", what)
            retries += 1
            sleep(delay)
            delay = min(delay * 2, _BACKOFF_CAP)
            continue
        if retries:
            log.warning("%s: succeeded after %d retries", what, retries)
        return result


def insert_batch(
    db: sqlite3.Connection, run_id: str, first_seq: int, frames: Sequence[bytes]
) -> None:
    """Insert contiguous frames ``first_seq, first_seq + 1, ...`` of one run (no commit)."""
    offsets = []
    pos = 1
    for f in frames:
        n = len(f)
        offsets.append(pos << 32 | n)
        pos += n
    db.execute(_INSERT_BATCH, (run_id, first_seq, b"".join(frames), json.dumps(offsets)))


class FrameGap(RuntimeError):
    """A batch part that does not follow the run's last committed frame (never stored)."""


# A batch part: (run key, seq of its first frame, its contiguous frames). The run key is the
# run id or any object with an ``id`` attribute (the engine passes its live run).
FramePart = tuple[Any, int, Sequence[bytes]]
# What the writer reports per (merged) part: the part, then None or why it was not stored.
CommitResult = tuple[Any, int, Sequence[bytes], BaseException | None]


def _run_key(run: Any) -> str:
    return run if isinstance(run, str) else str(run.id)


class FrameWriter:
    """Commits frame batches on its own thread and SQLite connection, in submission order.

    The event loop only hands batches over; inserting and committing (the bulk of a live run's
    cost) run here without the GIL, so the loop keeps producing and serving meanwhile. Parts
    that queue up while a commit is in flight are committed together (group commit). A part
    that does not start right after its run's last committed seq is refused (``FrameGap``), so
    once a commit has failed nothing later of that run can land behind the hole.
    ``on_commit(results)`` is called on this thread after each commit (or failure).
    """

    def __init__(
        self,
        path: Path,
        write_lock: threading.Lock,
        on_commit: Callable[[list[CommitResult]], None],
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        retry_seconds: float = WRITE_RETRY_SECONDS,
        pragmas: Sequence[str] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._write_lock = write_lock
        self._db = connect(path, busy_timeout_ms, pragmas)
        self._retry_seconds = retry_seconds
        self._sleep = sleep
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._queue: list[FramePart] = []
        self._expected: dict[str, int] = {}  # run id -> seq its next stored frame must have
        self._closing = False
        self._thread = threading.Thread(
            target=self._work, name="letta-nb-frame-writer", daemon=True
        )
        self._thread.start()

    def submit(self, parts: list[FramePart]) -> None:
        with self._cond:
            self._queue.extend(parts)
            self._cond.notify()

    def forget(self, run_id: str) -> None:
        """The run is finished and settled: drop its contiguity state."""
        with self._cond:
            self._expected.pop(run_id, None)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._db.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                parts, self._queue = self._queue, []
                expected = dict(self._expected)
            results = self._commit(parts, expected)
            try:
                self._on_commit(results)
            except Exception:  # e.g. the loop closed during shutdown
                log.debug("frame commit callback failed", exc_info=True)

    def _commit(self, parts: list[FramePart], expected: dict[str, int]) -> list[CommitResult]:
        """Merge each run's contiguous parts, refuse gaps, commit the rest in one transaction."""
        merged: dict[str, list[Any]] = {}  # run id -> [run, first, frames]
        refused: list[CommitResult] = []
        for run, first, frames in parts:
            if not frames:
                continue
            key = _run_key(run)
            have = merged.get(key)
            if have is not None and first == have[1] + len(have[2]):
                have[2].extend(frames)
                continue
            want = expected.get(key, 1) if have is None else have[1] + len(have[2])
            if first != want:
                gap = FrameGap(f"frames of {key} from seq {first} do not follow seq {want - 1}")
                refused.append((run, first, frames, gap))
                continue
            merged[key] = [run, first, list(frames)]
        error: BaseException | None = None
        if merged:
            try:
                retry_transient(
                    lambda: self._write(merged),
                    budget=self._retry_seconds,
                    sleep=self._sleep,
                    what="frame commit",
                )
            except Exception as exc:  # the runs are told; the thread stays alive
                log.error("frame batch commit failed: %s", exc)
                error = exc
            else:
                with self._cond:
                    for key, (_run, first, frames) in merged.items():
                        self._expected[key] = first + len(frames)
        done: list[CommitResult] = [(r, f, fr, error) for r, f, fr in merged.values()]
        return done + refused

    def _write(self, merged: dict[str, list[Any]]) -> None:
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, (_run, first, frames) in merged.items():
                    insert_batch(self._db, key, first, frames)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise


_RUN_COLS = (
    "ord, id, agent_id, created_at, completed_at, status, stop_reason, background, metadata, "
    "otid_key, last_seq, usage, total_duration_ns, ttft_ns, conversation_id"
)
_RUN_KEYS = [c.strip() for c in _RUN_COLS.split(",")]
_AGENT_COLS = "ord, id, name, model, created_at, updated_at, config, pending, last_stop_reason"


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_RUN_KEYS, row, strict=True))
    out["metadata"] = json.loads(out["metadata"])
    out["usage"] = json.loads(out["usage"]) if out["usage"] else None
    return out


def _agent_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "ord": row[0],
        "id": row[1],
        "name": row[2],
        "model": row[3],
        "created_at": row[4],
        "updated_at": row[5],
        "config": json.loads(row[6]),
        "pending": json.loads(row[7]) if row[7] else None,
        "last_stop_reason": row[8],
    }


_CONV_COLS = (
    "ord, id, agent_id, summary, model, model_settings, created_at, updated_at, "
    "last_message_at, deleted_at, hidden, pending"
)
_CONV_KEYS = [c.strip() for c in _CONV_COLS.split(",")]


def _conversation_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_CONV_KEYS, row, strict=True))
    out["model_settings"] = json.loads(out["model_settings"]) if out["model_settings"] else None
    out["pending"] = json.loads(out["pending"]) if out["pending"] else None
    out["hidden"] = bool(out["hidden"])
    return out


def _history_where(agent_id: str, conversation_id: str | None) -> tuple[str, list[Any]]:
    """The messages of one history: a conversation's (its copies included) or the agent's
    default history."""
    if conversation_id is None:
        return "agent_id = ? AND conversation_id IS NULL", [agent_id]
    return "conversation_id = ?", [conversation_id]


def _get_pending(db: sqlite3.Connection, agent_id: str, conversation_id: str | None) -> Any:
    if conversation_id is None:
        row = db.execute("SELECT pending FROM agents WHERE id = ?", (agent_id,)).fetchone()
    else:
        row = db.execute(
            "SELECT pending FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def _set_pending(
    db: sqlite3.Connection,
    agent_id: str,
    conversation_id: str | None,
    pending: dict[str, Any] | None,
    now: float,
    *,
    cancelled: bool = False,
) -> None:
    value = json.dumps(pending) if pending is not None else None
    if conversation_id is None:
        extra = ", last_stop_reason = 'cancelled'" if cancelled else ""
        db.execute(
            f"UPDATE agents SET pending = ?{extra}, updated_at = ? WHERE id = ?",
            (value, now, agent_id),
        )
    else:
        db.execute(
            "UPDATE conversations SET pending = ?, updated_at = ? WHERE id = ?",
            (value, now, conversation_id),
        )
        if cancelled:
            db.execute(
                "UPDATE agents SET last_stop_reason = 'cancelled', updated_at = ? WHERE id = ?",
                (now, agent_id),
            )


class Page:
    """Cursor pagination over an ``ord`` column: ``after``/``before`` are item ids, never repeat."""

    def __init__(self, order: str, after_ord: int | None, before_ord: int | None, limit: int):
        self.desc = order == "desc"
        self.after_ord = after_ord
        self.before_ord = before_ord
        self.limit = limit

    def sql(self, where: list[str], params: list[Any]) -> tuple[str, list[Any]]:
        """``after`` means "next page in the requested order"; ``before`` the previous one."""
        where = list(where)
        params = list(params)
        if self.after_ord is not None:
            where.append("ord < ?" if self.desc else "ord > ?")
            params.append(self.after_ord)
        if self.before_ord is not None:
            where.append("ord > ?" if self.desc else "ord < ?")
            params.append(self.before_ord)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        # With only `before`, take the items nearest the cursor, then restore the order.
        nearest_first = self.before_ord is not None and self.after_ord is None
        direction = "DESC" if self.desc != nearest_first else "ASC"
        return f"{clause} ORDER BY ord {direction} LIMIT ?", [*params, self.limit]

    def finish(self, rows: list[Any]) -> list[Any]:
        if self.before_ord is not None and self.after_ord is None:
            rows.reverse()
        return rows


class Store:
    """All persistent state, one connection per calling thread (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        write_retry_seconds: float = WRITE_RETRY_SECONDS,
        pragmas: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.write_retry_seconds = write_retry_seconds
        self.pragmas = tuple(pragmas)
        self.clock = clock
        self.sleep = sleep
        private_dir(path.parent)
        private_file(path)
        self.write_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=20000")
        with self.write_lock:
            db.executescript(_SCHEMA)
            for table, column, decl in _MIGRATIONS:
                cols = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in cols:  # databases written by an earlier version
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            db.executescript(_INDEXES)
        for suffix in ("-wal", "-shm"):  # created by an older version with the umask's mode
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    def connection(self) -> None:
        """Open this thread's connection now (worker threads call it once at startup)."""
        self._db()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path, self.busy_timeout_ms, self.pragmas)
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()

    def frame_writer(self, on_commit: Callable[[list[CommitResult]], None]) -> FrameWriter:
        return FrameWriter(
            self.path,
            self.write_lock,
            on_commit,
            busy_timeout_ms=self.busy_timeout_ms,
            retry_seconds=self.write_retry_seconds,
            pragmas=self.pragmas,
            sleep=self.sleep,
        )

    def _write(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn`` under the write lock, retrying while another connection holds SQLite's."""
        db = self._db()

        def attempt() -> T:
            with self.write_lock:
                try:
                    return fn(db)
                except BaseException:
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise

        return retry_transient(
            attempt, budget=self.write_retry_seconds, sleep=self.sleep, what=what
        )

    def _exec(self, sql: str, params: Sequence[Any] = (), what: str = "write") -> None:
        self._write(lambda db: db.execute(sql, params), what)

    # -- frames -----------------------------------------------------------------------------
    def append_frames(self, frames: Iterable[tuple[str, int, bytes]]) -> None:
        """Insert ``(run_id, seq, bytes)`` rows and commit them in one transaction."""
        rows = list(frames)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO frames (run_id, seq, data) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")

        self._write(write, "frame append")

    def read_frames(self, run_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        return (
            self._db()
            .execute(
                "SELECT seq, data FROM frames WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after_seq, limit),
            )
            .fetchall()
        )

    def last_frame_seq(self, run_id: str) -> int:
        row = (
            self._db().execute("SELECT MAX(seq) FROM frames WHERE run_id = ?", (run_id,)).fetchone()
        )
        return int(row[0] or 0)

    # -- agents -----------------------------------------------------------------------------
    def insert_agent(
        self,
        agent_id: str,
        name: str,
        model: str,
        config: dict[str, Any],
        system_message: dict[str, Any] | None = None,
    ) -> None:
        """The agent and its default history's system message, in one transaction."""
        now = self.clock()

        def insert(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO agents (id, name, model, created_at, updated_at, config) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (agent_id, name, model, now, now, json.dumps(config)),
            )
            if system_message is not None:
                db.execute(
                    "INSERT INTO messages (id, agent_id, run_id, data) VALUES (?, ?, '', ?)",
                    (system_message["id"], agent_id, json.dumps(system_message)),
                )
            db.execute("COMMIT")

        self._write(insert, "agent insert")

    def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        row = (
            self._db()
            .execute(f"SELECT {_AGENT_COLS} FROM agents WHERE id = ?", (agent_id,))
            .fetchone()
        )
        return _agent_row(row) if row else None

    def list_agents(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        where, params = ([], [])
        if name is not None:
            where.append("name = ?")
            params.append(name)
        tail, params = page.sql(where, params)
        rows = self._db().execute(f"SELECT {_AGENT_COLS} FROM agents" + tail, params).fetchall()
        return [_agent_row(r) for r in page.finish(rows)]

    def ord_of(self, table: str, item_id: str, *, conversation_id: str | None = None) -> int | None:
        """The ``ord`` of an item, for page cursors. A message id names one row per history
        (forks copy rows): ``conversation_id`` picks that conversation's, else the original."""
        assert table in ("agents", "runs", "messages", "steps", "tools", "conversations")
        params: tuple[str, ...] = (item_id,)
        if table == "messages" and conversation_id is not None:
            sql = "SELECT ord FROM messages WHERE id = ? AND conversation_id = ?"
            params = (item_id, conversation_id)
        elif table == "messages":
            sql = "SELECT ord FROM messages WHERE id = ? ORDER BY copied LIMIT 1"
        else:
            sql = f"SELECT ord FROM {table} WHERE id = ?"
        row = self._db().execute(sql, params).fetchone()
        return row[0] if row else None

    def update_agent(self, agent_id: str, **fields: Any) -> None:
        sets, params = [], []
        for key, value in fields.items():
            assert key in ("config", "pending", "last_stop_reason", "name")
            sets.append(f"{key} = ?")
            params.append(
                json.dumps(value) if key in ("config", "pending") and value is not None else value
            )
        sets.append("updated_at = ?")
        params.append(self.clock())
        self._exec(
            f"UPDATE agents SET {', '.join(sets)} WHERE id = ?", [*params, agent_id], "agent update"
        )

    def delete_agent(self, agent_id: str) -> None:
        self._exec("DELETE FROM agents WHERE id = ?", (agent_id,), "agent delete")

    # -- tools ------------------------------------------------------------------------------
    def insert_tool(self, tool: dict[str, Any]) -> None:
        self._exec(
            "INSERT INTO tools (id, name, data) VALUES (?, ?, ?)",
            (tool["id"], tool["name"], json.dumps(tool)),
            "tool insert",
        )

    def update_tool(self, tool: dict[str, Any]) -> None:
        self._exec(
            "UPDATE tools SET name = ?, data = ? WHERE id = ?",
            (tool["name"], json.dumps(tool), tool["id"]),
            "tool update",
        )

    def get_tool(self, tool_id: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT data FROM tools WHERE id = ?", (tool_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def tool_by_name(self, name: str) -> dict[str, Any] | None:
        row = (
            self._db()
            .execute("SELECT data FROM tools WHERE name = ? ORDER BY ord DESC LIMIT 1", (name,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def list_tools(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        where, params = ([], [])
        if name is not None:
            where.append("name = ?")
            params.append(name)
        tail, params = page.sql(where, params)
        rows = self._db().execute("SELECT data FROM tools" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]

    def delete_tool(self, tool_id: str) -> None:
        self._exec("DELETE FROM tools WHERE id = ?", (tool_id,), "tool delete")

    # -- runs -------------------------------------------------------------------------------
    def insert_run(
        self,
        run_id: str,
        agent_id: str,
        background: bool,
        otid_key: str | None,
        *,
        status: str = "running",
        conversation_id: str | None = None,
        run_type: str = "send_message",
        otids: Sequence[str] = (),
        guard_pending: bool = False,
    ) -> dict[str, Any] | None:
        """A new run, the otids it answers for (resume by otid) and its conversation's
        ``last_message_at``, in one transaction. With ``guard_pending``, a history whose
        approval is pending gets no run: that pending call is returned instead (None: the
        run was inserted)."""

        def insert(db: sqlite3.Connection) -> dict[str, Any] | None:
            db.execute("BEGIN IMMEDIATE")
            if guard_pending:
                pending = _get_pending(db, agent_id, conversation_id)
                if pending is not None:
                    db.execute("ROLLBACK")
                    return dict(pending)
            self._insert_run(
                db, run_id, agent_id, background, otid_key, status, conversation_id, run_type
            )
            self._map_otids(db, agent_id, run_id, otids)
            if conversation_id is not None:
                now = self.clock()
                db.execute(
                    "UPDATE conversations SET last_message_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, conversation_id),
                )
            db.execute("COMMIT")
            return None

        return self._write(insert, "run insert")

    def _insert_run(
        self,
        db: sqlite3.Connection,
        run_id: str,
        agent_id: str,
        background: bool,
        otid_key: str | None,
        status: str,
        conversation_id: str | None,
        run_type: str = "send_message",
    ) -> None:
        db.execute(
            "INSERT INTO runs (id, agent_id, created_at, status, background, metadata, "
            "otid_key, conversation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                agent_id,
                self.clock(),
                status,
                int(background),
                json.dumps({"run_type": run_type}),
                otid_key,
                conversation_id,
            ),
        )

    @staticmethod
    def _map_otids(
        db: sqlite3.Connection, agent_id: str, run_id: str, otids: Sequence[str]
    ) -> None:
        if otids:
            db.executemany(
                "INSERT OR REPLACE INTO run_otids (agent_id, otid, run_id) VALUES (?, ?, ?)",
                [(agent_id, otid, run_id) for otid in dict.fromkeys(otids)],
            )

    def insert_answer_run(
        self,
        run_id: str,
        agent_id: str,
        background: bool,
        accept: Callable[[dict[str, Any]], bool],
        *,
        conversation_id: str | None = None,
        run_type: str = "send_message",
    ) -> tuple[dict[str, Any] | None, bool]:
        """Claim the pending approval of a history (the agent's default one, or the
        conversation's) for a new run, atomically.

        In one transaction: if a call is pending and ``accept(pending)``, clear it and insert
        the answering run. Returns ``(pending, claimed)``: ``(None, False)`` when nothing is
        pending, ``(pending, False)`` when ``accept`` refused it (it stays pending, no run is
        inserted). Of any number of concurrent answers exactly one can get ``claimed``.
        """

        def claim(db: sqlite3.Connection) -> tuple[dict[str, Any] | None, bool]:
            db.execute("BEGIN IMMEDIATE")
            pending = _get_pending(db, agent_id, conversation_id)
            taken = pending is not None and accept(pending)
            if taken:
                now = self.clock()
                _set_pending(db, agent_id, conversation_id, None, now)
                self._insert_run(
                    db, run_id, agent_id, background, None, "running", conversation_id, run_type
                )
                if conversation_id is not None:
                    db.execute(
                        "UPDATE conversations SET last_message_at = ? WHERE id = ?",
                        (now, conversation_id),
                    )
            db.execute("COMMIT")
            return pending, taken

        return self._write(claim, "approval claim")

    def cancel_pending(
        self,
        agent_id: str,
        run_id: str,
        denial: Callable[[dict[str, Any]], list[dict[str, Any]]],
        *,
        conversation_id: str | None = None,
    ) -> bool:
        """If ``run_id``'s approval is still pending in its history: clear it, store
        ``denial(pending)`` (the messages an explicit denial leaves) and mark the run
        cancelled, in one transaction. False if it is not pending any more (answered, or
        never was)."""

        def cancel(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            pending = _get_pending(db, agent_id, conversation_id)
            if pending is None or pending.get("run_id") != run_id:
                db.execute("COMMIT")
                return False
            now = self.clock()
            _set_pending(db, agent_id, conversation_id, None, now, cancelled=True)
            db.executemany(
                "INSERT INTO messages (id, agent_id, run_id, data, conversation_id) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (m["id"], agent_id, run_id, json.dumps(m), conversation_id)
                    for m in denial(pending)
                ],
            )
            db.execute(
                "UPDATE runs SET status = 'cancelled', stop_reason = 'cancelled', "
                "completed_at = ? WHERE id = ?",
                (now, run_id),
            )
            db.execute("COMMIT")
            return True

        return self._write(cancel, "approval cancel")

    def set_pending(
        self, agent_id: str, conversation_id: str | None, pending: dict[str, Any] | None
    ) -> None:
        """The history's pending approval (None clears it)."""
        self._write(
            lambda db: _set_pending(db, agent_id, conversation_id, pending, self.clock()),
            "pending approval",
        )

    def pending_approval(self, agent_id: str, conversation_id: str | None) -> Any:
        return _get_pending(self._db(), agent_id, conversation_id)

    def conversations_pending(self, agent_id: str) -> list[dict[str, Any]]:
        """Approvals waiting in the agent's (live) conversations, newest first."""
        rows = (
            self._db()
            .execute(
                "SELECT pending FROM conversations WHERE agent_id = ? AND pending IS NOT NULL "
                "AND deleted_at IS NULL ORDER BY updated_at DESC",
                (agent_id,),
            )
            .fetchall()
        )
        return [json.loads(r[0]) for r in rows]

    def send_state(
        self, agent_id: str | None, conversation_id: str | None, otid_key: str | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
        """What a send needs, in one read: (agent, conversation, the run its otids started).
        With ``conversation_id`` the agent is the conversation's; (None, None, None) when the
        conversation is unknown."""
        db = self._db()
        conversation = None
        if conversation_id is not None:
            row = db.execute(
                f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                return None, None, None
            conversation = _conversation_row(row)
            agent_id = conversation["agent_id"]
        row = db.execute(f"SELECT {_AGENT_COLS} FROM agents WHERE id = ?", (agent_id,)).fetchone()
        agent = _agent_row(row) if row else None
        existing = None
        if agent is not None and otid_key is not None:
            existing = self.run_by_otid(agent["id"], otid_key)
        return agent, conversation, existing

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db().execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def run_by_otid(self, agent_id: str, otid_key: str) -> dict[str, Any] | None:
        row = (
            self._db()
            .execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE agent_id = ? AND otid_key = ? "
                "ORDER BY ord DESC LIMIT 1",
                (agent_id, otid_key),
            )
            .fetchone()
        )
        return _run_row(row) if row else None

    def run_for_otid(self, agent_id: str, otid: str) -> dict[str, Any] | None:
        """The run a message otid of this agent started (any otid of its request)."""
        row = (
            self._db()
            .execute(
                f"SELECT {', '.join('r.' + k for k in _RUN_KEYS)} FROM run_otids o "
                "JOIN runs r ON r.id = o.run_id WHERE o.agent_id = ? AND o.otid = ?",
                (agent_id, otid),
            )
            .fetchone()
        )
        return _run_row(row) if row else None

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        stop_reason: str,
        last_seq: int,
        usage: dict[str, int] | None,
        metadata: dict[str, Any],
        total_duration_ns: int | None,
        ttft_ns: int | None = None,
        steps: Sequence[dict[str, Any]] = (),
        agent_id: str | None = None,
    ) -> None:
        """The run's final row, its steps and the agent's ``last_stop_reason``, atomically."""

        def finish(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE runs SET status = ?, stop_reason = ?, completed_at = ?, last_seq = ?, "
                "usage = ?, metadata = ?, total_duration_ns = ?, ttft_ns = ? WHERE id = ?",
                (
                    status,
                    stop_reason,
                    self.clock(),
                    last_seq,
                    json.dumps(usage) if usage else None,
                    json.dumps(metadata),
                    total_duration_ns,
                    ttft_ns,
                    run_id,
                ),
            )
            db.executemany(
                "INSERT INTO steps (id, run_id, data) VALUES (?, ?, ?)",
                [(s["id"], s["run_id"], json.dumps(s)) for s in steps],
            )
            if agent_id is not None:
                db.execute(
                    "UPDATE agents SET last_stop_reason = ?, updated_at = ? WHERE id = ?",
                    (stop_reason, self.clock(), agent_id),
                )
            db.execute("COMMIT")

        self._write(finish, "run finish")

    def list_runs(
        self,
        page: Page,
        *,
        agent_ids: list[str],
        statuses: list[str],
        background: bool | None,
        stop_reason: str | None,
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        if agent_ids:
            where.append(f"agent_id IN ({','.join('?' * len(agent_ids))})")
            params.extend(agent_ids)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if background is not None:
            where.append("background = ?")
            params.append(int(background))
        if stop_reason is not None:
            where.append("stop_reason = ?")
            params.append(stop_reason)
        tail, params = page.sql(where, params)
        rows = self._db().execute(f"SELECT {_RUN_COLS} FROM runs" + tail, params).fetchall()
        return [_run_row(r) for r in page.finish(rows)]

    def unfinished_runs(self) -> list[dict[str, Any]]:
        rows = (
            self._db()
            .execute(f"SELECT {_RUN_COLS} FROM runs WHERE status IN ('created', 'running')")
            .fetchall()
        )
        return [_run_row(r) for r in rows]

    # -- messages and steps -----------------------------------------------------------------
    def insert_message(
        self,
        agent_id: str,
        run_id: str,
        message: dict[str, Any],
        conversation_id: str | None = None,
    ) -> None:
        self._exec(
            "INSERT INTO messages (id, agent_id, run_id, data, conversation_id) "
            "VALUES (?, ?, ?, ?, ?)",
            (message["id"], agent_id, run_id, json.dumps(message), conversation_id),
            "message insert",
        )

    def list_messages(
        self,
        page: Page,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        history: str | None = None,
        default_history: bool = False,
    ) -> list[dict[str, Any]]:
        """Messages of an agent (every history, each message once), of a run, of one
        conversation (``history``, its fork copies included) or of the agent's default
        history (``default_history``)."""
        where: list[str] = []
        params: list[Any] = []
        if history is not None or default_history:
            assert history is not None or agent_id is not None
            clause, params = _history_where(agent_id or "", history)
            where.append(clause)
        else:
            where.append("copied = 0")
            if agent_id is not None:
                where.append("agent_id = ?")
                params.append(agent_id)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        tail, params = page.sql(where, params)
        rows = self._db().execute("SELECT data FROM messages" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]

    def ord_in_history(
        self, agent_id: str, conversation_id: str | None, message_id: str
    ) -> int | None:
        clause, params = _history_where(agent_id, conversation_id)
        row = (
            self._db()
            .execute(f"SELECT ord FROM messages WHERE {clause} AND id = ?", [*params, message_id])
            .fetchone()
        )
        return row[0] if row else None

    def history_ids(self, agent_id: str, conversation_id: str | None) -> list[str]:
        """Message ids of one history, oldest first (a conversation's in-context ids)."""
        clause, params = _history_where(agent_id, conversation_id)
        rows = (
            self._db()
            .execute(f"SELECT id FROM messages WHERE {clause} ORDER BY ord", params)
            .fetchall()
        )
        return [r[0] for r in rows]

    # -- conversations ----------------------------------------------------------------------
    def insert_conversation(
        self,
        conversation_id: str,
        agent_id: str,
        *,
        summary: str | None,
        model: str | None,
        model_settings: dict[str, Any] | None,
        system_message: dict[str, Any],
        hidden: bool = False,
        fork_of: tuple[str | None, int | None] | None = None,
    ) -> None:
        """A new conversation with its own system message, in one transaction. ``fork_of``
        = (source conversation or None for the default history, last ord to copy or None
        for all): the source's messages are copied after the system message (same ids)."""

        def insert(db: sqlite3.Connection) -> None:
            now = self.clock()
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO conversations (id, agent_id, summary, model, model_settings, "
                "created_at, updated_at, hidden) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    agent_id,
                    summary,
                    model,
                    json.dumps(model_settings) if model_settings is not None else None,
                    now,
                    now,
                    int(hidden),
                ),
            )
            db.execute(
                "INSERT INTO messages (id, agent_id, run_id, data, conversation_id) "
                "VALUES (?, ?, '', ?, ?)",
                (system_message["id"], agent_id, json.dumps(system_message), conversation_id),
            )
            if fork_of is not None:
                source, upto = fork_of
                clause, params = _history_where(agent_id, source)
                if upto is not None:
                    clause += " AND ord <= ?"
                    params.append(upto)
                db.execute(
                    "INSERT INTO messages (id, agent_id, run_id, data, conversation_id, copied) "
                    f"SELECT id, agent_id, run_id, data, ?, 1 FROM messages WHERE {clause} "
                    "AND json_extract(data, '$.message_type') != 'system_message' ORDER BY ord",
                    [conversation_id, *params],
                )
            db.execute("COMMIT")

        self._write(insert, "conversation insert")

    def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation (deleted ones too: ``deleted_at`` says so)."""
        row = (
            self._db()
            .execute(f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?", (conversation_id,))
            .fetchone()
        )
        return _conversation_row(row) if row else None

    def list_conversations(
        self,
        page: Page,
        *,
        agent_id: str | None,
        summary_search: str | None = None,
        order_by: str = "created_at",
    ) -> list[dict[str, Any]]:
        """Live, unhidden conversations; ``summary_search``: a case-insensitive substring."""
        where = ["deleted_at IS NULL", "hidden = 0"]
        params: list[Any] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if summary_search:
            where.append("instr(lower(coalesce(summary, '')), lower(?)) > 0")
            params.append(summary_search)
        tail, params = page.sql(where, params)
        if order_by != "created_at":  # a stable order by that column, newest/oldest first
            assert order_by in ("last_message_at", "updated_at")
            direction = "DESC" if page.desc else "ASC"
            tail = tail.replace(
                "ORDER BY ord", f"ORDER BY {order_by} IS NULL, {order_by} {direction}, ord"
            )
        rows = (
            self._db().execute(f"SELECT {_CONV_COLS} FROM conversations" + tail, params).fetchall()
        )
        return [_conversation_row(r) for r in page.finish(rows)]

    def update_conversation(self, conversation_id: str, **fields: Any) -> None:
        sets, params = [], []
        for key, value in fields.items():
            assert key in ("summary", "model", "model_settings", "last_message_at", "deleted_at")
            sets.append(f"{key} = ?")
            params.append(json.dumps(value) if key == "model_settings" and value else value)
        sets.append("updated_at = ?")
        params.append(self.clock())
        self._exec(
            f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?",
            [*params, conversation_id],
            "conversation update",
        )

    def delete_agent_conversations(self, agent_id: str) -> None:
        now = self.clock()
        self._exec(
            "UPDATE conversations SET deleted_at = ?, updated_at = ? "
            "WHERE agent_id = ? AND deleted_at IS NULL",
            (now, now, agent_id),
            "conversation delete",
        )

    def list_steps(self, page: Page, run_id: str) -> list[dict[str, Any]]:
        tail, params = page.sql(["run_id = ?"], [run_id])
        rows = self._db().execute("SELECT data FROM steps" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]
