"""SQLite storage: agents, tools, runs, messages, steps and the per-run SSE frame log.

One connection, used from the server's event loop thread (a lock guards other threads). Frames are
stored as their final bytes (run_id and seq_id already injected), keyed by ``(run_id, seq)``, so a
replay is one range scan plus a concatenation and a resume at any position is an index seek.
Frames are inserted and committed in batches *before* any reader is told about them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

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
    ttft_ns INTEGER
);
CREATE INDEX IF NOT EXISTS runs_agent ON runs (agent_id, ord);
CREATE INDEX IF NOT EXISTS runs_otid ON runs (agent_id, otid_key);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
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

log = logging.getLogger(__name__)

# One statement inserts a run's whole batch: the frames travel as one blob plus a JSON list of
# ``offset << 32 | length`` integers, so SQLite does every row in C with the GIL released
# (``executemany`` re-takes the GIL per row: half the throughput, and it stalls the event loop).
_INSERT_BATCH = (
    "INSERT INTO frames (run_id, seq, data) "
    "SELECT ?1, ?2 + key, substr(?3, value >> 32, value & 4294967295) FROM json_each(?4)"
)

# (run key, seq of the first frame, the run's contiguous frames in this batch)
FrameBatch = list[tuple[Any, int, Sequence[bytes]]]


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


class FrameWriter:
    """Commits frame batches on its own thread and SQLite connection, in submission order.

    The event loop only hands batches over; inserting and committing (the bulk of a live run's
    cost) run here without the GIL, so the loop keeps producing and serving meanwhile. Batches
    that queue up while a commit is in flight are committed together (group commit).
    ``on_commit(batch, error)`` is called on this thread after each commit (or failure).
    """

    def __init__(
        self,
        path: Path,
        write_lock: threading.Lock,
        on_commit: Callable[[FrameBatch, BaseException | None], None],
    ) -> None:
        self._write_lock = write_lock
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        for pragma in (
            "synchronous=NORMAL",
            "busy_timeout=5000",
            "cache_size=-65536",
            "mmap_size=268435456",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._queue: FrameBatch = []
        self._closing = False
        self._thread = threading.Thread(
            target=self._work, name="letta-nb-frame-writer", daemon=True
        )
        self._thread.start()

    def submit(self, batch: FrameBatch) -> None:
        with self._cond:
            self._queue.extend(batch)
            self._cond.notify()

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
                batch, self._queue = self._queue, []
            error: BaseException | None = None
            try:
                self._write(batch)
            except Exception as exc:  # keep the thread alive; the runs are told
                log.exception("frame batch commit failed")
                error = exc
            try:
                self._on_commit(batch, error)
            except Exception:  # e.g. the loop closed during shutdown
                log.debug("frame commit callback failed", exc_info=True)

    def _write(self, batch: FrameBatch) -> None:
        # A run may appear several times when batches were merged: coalesce its parts.
        merged: dict[str, tuple[int, list[bytes]]] = {}
        for run, first, frames in batch:
            key = run if isinstance(run, str) else run.id
            have = merged.get(key)
            if have is None:
                merged[key] = (first, list(frames))
            else:
                have[1].extend(frames)
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for run_id, (first, frames) in merged.items():
                    insert_batch(self._db, run_id, first, frames)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


_RUN_COLS = (
    "ord, id, agent_id, created_at, completed_at, status, stop_reason, background, metadata, "
    "otid_key, last_seq, usage, total_duration_ns, ttft_ns"
)


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _RUN_COLS.split(",")]
    out = dict(zip(keys, row, strict=True))
    out["metadata"] = json.loads(out["metadata"])
    out["usage"] = json.loads(out["usage"]) if out["usage"] else None
    return out


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
    """All persistent state. Methods are short and synchronous; callers stay on one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Held for every write, by this connection and by the FrameWriter's: writers then queue
        # on a lock that wakes at once, instead of SQLite's sleeping busy handler.
        self.write_lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA wal_autocheckpoint=20000")
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.execute("PRAGMA mmap_size=268435456")
        self.db.executescript(_SCHEMA)
        cols = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        if "ttft_ns" not in cols:  # databases written before time-to-first-token was kept
            self.db.execute("ALTER TABLE runs ADD COLUMN ttft_ns INTEGER")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- frames -----------------------------------------------------------------------------
    def append_frames(self, frames: Iterable[tuple[str, int, bytes]]) -> None:
        """Insert a batch of ``(run_id, seq, bytes)`` and commit it in one transaction."""
        with self._lock, self.write_lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany(
                    "INSERT INTO frames (run_id, seq, data) VALUES (?, ?, ?)", frames
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def read_frames(self, run_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self.db.execute(
                "SELECT seq, data FROM frames WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after_seq, limit),
            ).fetchall()

    def last_frame_seq(self, run_id: str) -> int:
        with self._lock:
            row = self.db.execute(
                "SELECT MAX(seq) FROM frames WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(row[0] or 0)

    # -- agents -----------------------------------------------------------------------------
    def insert_agent(self, agent_id: str, name: str, model: str, config: dict[str, Any]) -> None:
        now = time.time()
        with self._lock, self.write_lock:
            self.db.execute(
                "INSERT INTO agents (id, name, model, created_at, updated_at, config) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (agent_id, name, model, now, now, json.dumps(config)),
            )

    def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT ord, id, name, model, created_at, updated_at, config, pending, "
                "last_stop_reason FROM agents WHERE id = ?",
                (agent_id,),
            ).fetchone()
        return self._agent(row) if row else None

    @staticmethod
    def _agent(row: tuple[Any, ...]) -> dict[str, Any]:
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

    def list_agents(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        where, params = ([], [])
        if name is not None:
            where.append("name = ?")
            params.append(name)
        tail, params = page.sql(where, params)
        with self._lock:
            rows = self.db.execute(
                "SELECT ord, id, name, model, created_at, updated_at, config, pending, "
                "last_stop_reason FROM agents" + tail,
                params,
            ).fetchall()
        return [self._agent(r) for r in page.finish(rows)]

    def ord_of(self, table: str, item_id: str) -> int | None:
        assert table in ("agents", "runs", "messages", "steps", "tools")
        with self._lock:
            row = self.db.execute(f"SELECT ord FROM {table} WHERE id = ?", (item_id,)).fetchone()
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
        params.append(time.time())
        with self._lock, self.write_lock:
            self.db.execute(
                f"UPDATE agents SET {', '.join(sets)} WHERE id = ?", [*params, agent_id]
            )

    def delete_agent(self, agent_id: str) -> None:
        with self._lock, self.write_lock:
            self.db.execute("DELETE FROM agents WHERE id = ?", (agent_id,))

    # -- tools ------------------------------------------------------------------------------
    def insert_tool(self, tool: dict[str, Any]) -> None:
        with self._lock, self.write_lock:
            self.db.execute(
                "INSERT INTO tools (id, name, data) VALUES (?, ?, ?)",
                (tool["id"], tool["name"], json.dumps(tool)),
            )

    def update_tool(self, tool: dict[str, Any]) -> None:
        with self._lock, self.write_lock:
            self.db.execute(
                "UPDATE tools SET name = ?, data = ? WHERE id = ?",
                (tool["name"], json.dumps(tool), tool["id"]),
            )

    def get_tool(self, tool_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT data FROM tools WHERE id = ?", (tool_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def tool_by_name(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT data FROM tools WHERE name = ? ORDER BY ord DESC LIMIT 1", (name,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list_tools(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        where, params = ([], [])
        if name is not None:
            where.append("name = ?")
            params.append(name)
        tail, params = page.sql(where, params)
        with self._lock:
            rows = self.db.execute("SELECT data FROM tools" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]

    def delete_tool(self, tool_id: str) -> None:
        with self._lock, self.write_lock:
            self.db.execute("DELETE FROM tools WHERE id = ?", (tool_id,))

    # -- runs -------------------------------------------------------------------------------
    def insert_run(
        self, run_id: str, agent_id: str, background: bool, otid_key: str | None
    ) -> None:
        with self._lock, self.write_lock:
            self.db.execute(
                "INSERT INTO runs (id, agent_id, created_at, status, background, metadata, "
                "otid_key) VALUES (?, ?, ?, 'created', ?, ?, ?)",
                (
                    run_id,
                    agent_id,
                    time.time(),
                    int(background),
                    json.dumps({"run_type": "send_message"}),
                    otid_key,
                ),
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        return _run_row(row) if row else None

    def run_by_otid(self, agent_id: str, otid_key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE agent_id = ? AND otid_key = ? "
                "ORDER BY ord DESC LIMIT 1",
                (agent_id, otid_key),
            ).fetchone()
        return _run_row(row) if row else None

    def set_run_status(self, run_id: str, status: str) -> None:
        with self._lock, self.write_lock:
            self.db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

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
    ) -> None:
        with self._lock, self.write_lock:
            self.db.execute(
                "UPDATE runs SET status = ?, stop_reason = ?, completed_at = ?, last_seq = ?, "
                "usage = ?, metadata = ?, total_duration_ns = ?, ttft_ns = ? WHERE id = ?",
                (
                    status,
                    stop_reason,
                    time.time(),
                    last_seq,
                    json.dumps(usage) if usage else None,
                    json.dumps(metadata),
                    total_duration_ns,
                    ttft_ns,
                    run_id,
                ),
            )

    def list_runs(
        self,
        page: Page,
        *,
        agent_ids: list[str],
        statuses: list[str],
        background: bool | None,
        stop_reason: str | None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
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
        with self._lock:
            rows = self.db.execute(f"SELECT {_RUN_COLS} FROM runs" + tail, params).fetchall()
        return [_run_row(r) for r in page.finish(rows)]

    def unfinished_runs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE status IN ('created', 'running')"
            ).fetchall()
        return [_run_row(r) for r in rows]

    # -- messages and steps -----------------------------------------------------------------
    def insert_message(self, agent_id: str, run_id: str, message: dict[str, Any]) -> None:
        with self._lock, self.write_lock:
            self.db.execute(
                "INSERT INTO messages (id, agent_id, run_id, data) VALUES (?, ?, ?, ?)",
                (message["id"], agent_id, run_id, json.dumps(message)),
            )

    def list_messages(
        self, page: Page, *, agent_id: str | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        tail, params = page.sql(where, params)
        with self._lock:
            rows = self.db.execute("SELECT data FROM messages" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]

    def insert_steps(self, steps: list[dict[str, Any]]) -> None:
        with self._lock, self.write_lock:
            self.db.executemany(
                "INSERT INTO steps (id, run_id, data) VALUES (?, ?, ?)",
                [(s["id"], s["run_id"], json.dumps(s)) for s in steps],
            )

    def list_steps(self, page: Page, run_id: str) -> list[dict[str, Any]]:
        tail, params = page.sql(["run_id = ?"], [run_id])
        with self._lock:
            rows = self.db.execute("SELECT data FROM steps" + tail, params).fetchall()
        return [json.loads(r[0]) for r in page.finish(rows)]
