"""Run cursors: where a cell's run chain is, kept in kernel memory and in a small SQLite file.

A cursor is what makes re-running a cell resume instead of restart: the agent (and the
conversation) of the chain of runs (an approval starts a new run), the send's otid, the last
seq of each run, the status and the cached transcript. The file lives in the user's state
directory (mode 0600) so a kernel restart finds it again.

The cheap state (runs, seqs, status) and the transcript records are stored apart: the session
writes the state often and the records only at settle points, so a long run costs no O(n)
encode every few seconds. The records carry their own seq state (`record_seqs`): a resume
after a crash starts from there, never from the newer `seqs` (that would skip frames).

Bad local state never stops a run: a file SQLite cannot read (corrupt, not a database) is moved
aside (`cursors.db.corrupt-<time>`) with one warning line and a fresh store is used; a write
that fails (full disk, read-only file) is one warning line, the cursors stay in memory and the
runs go on on the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("letta_nb")
T = TypeVar("T")
#: SQLite primary result codes of a file that is not a readable database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""
#: Batch runs (`letta_nb.batch`): one row per batch, one per item; an item's transcript
#: records (only while it runs: a finished item keeps its answer, not its transcript) apart.
_BATCH_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches ("
    " key TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS batch_items ("
    " batch TEXT NOT NULL, pos INTEGER NOT NULL, body TEXT NOT NULL, records TEXT,"
    " PRIMARY KEY (batch, pos)) WITHOUT ROWID",
)
_STATE_FIELDS = (
    "key",
    "agent_id",
    "runs",
    "seqs",
    "status",
    "stop_reason",
    "message",
    "updated_at",
    "active_seconds",
    "notice",
    "conversation_id",
    "otid",
)


@dataclass(slots=True)
class Cursor:
    key: str
    agent_id: str
    runs: list[str] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)
    status: str = "created"
    stop_reason: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    updated_at: float = field(default_factory=time.time)
    #: The seq state `records` reflect (None: the same as `seqs`). Resume from these.
    record_seqs: dict[str, int] | None = None
    #: Seconds the chain was worked on, as last measured here (approval waits excluded).
    active_seconds: float = 0.0
    #: The chain's lasting warning (e.g. what an incomplete run misses).
    notice: str | None = None
    #: The conversation the chain's runs belong to (None: the agent's default history).
    conversation_id: str | None = None
    #: The otid of the chain's send: a cell rebuilt before its run was named sends again
    #: with it, so a server that has the run re-attaches instead of starting another.
    otid: str | None = None

    @property
    def resume_seqs(self) -> dict[str, int]:
        """Per-run seqs that match the cached records: where a rebuilt transcript resumes."""
        return self.seqs if self.record_seqs is None else self.record_seqs

    @property
    def records_current(self) -> bool:
        """The cached records cover every seq of the cursor (nothing to re-read)."""
        if self.record_seqs is None:
            return True
        return all(self.record_seqs.get(r, 0) >= s for r, s in self.seqs.items())

    @property
    def run_id(self) -> str | None:
        return self.runs[-1] if self.runs else None

    @property
    def last_seq(self) -> int:
        rid = self.run_id
        return self.seqs.get(rid, 0) if rid else 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "agent_id": self.agent_id,
                "runs": self.runs,
                "seqs": self.seqs,
                "status": self.status,
                "stop_reason": self.stop_reason,
                "records": self.records,
                "message": self.message,
                "updated_at": self.updated_at,
                "record_seqs": self.record_seqs,
                "active_seconds": self.active_seconds,
                "notice": self.notice,
                "conversation_id": self.conversation_id,
                "otid": self.otid,
            },
            separators=(",", ":"),
            default=str,
        )

    def state_json(self) -> str:
        """The cheap part (no records): O(runs), whatever the transcript's size."""
        return json.dumps(
            {k: getattr(self, k) for k in _STATE_FIELDS}, separators=(",", ":"), default=str
        )

    def records_json(self) -> str:
        seqs = self.seqs if self.record_seqs is None else self.record_seqs
        return json.dumps(
            {"records": self.records, "seqs": seqs}, separators=(",", ":"), default=str
        )

    @classmethod
    def from_json(cls, text: str, records: str | None = None) -> Cursor:
        """A stored body (with `records` inside: older files) or state + records columns."""
        raw: Mapping[str, Any] = json.loads(text)
        cur = cls(**{k: raw[k] for k in cls.__slots__ if k in raw})
        if "records" not in raw:  # split storage: the records column, with its own seqs
            cached = json.loads(records) if records else {"records": [], "seqs": {}}
            cur.records = cached["records"]
            cur.record_seqs = {str(k): int(v) for k, v in cached["seqs"].items()}
        return cur


def cell_key(
    *,
    notebook: str | None,
    cell_id: str | None,
    agent: str,
    source: str,
    explicit: str | None = None,
) -> str:
    """Identity of a cell's cursor: --key, else JupyterLab's cellId + notebook, else a hash.

    nbclient/nbval send no cellId, so the fallback hashes agent + cell source: re-running the
    same text against the same agent resumes, editing the text starts a new run.
    """
    if explicit:
        return f"key:{explicit}"
    if cell_id:
        return f"cell:{notebook or ''}:{cell_id}"
    digest = hashlib.sha256(f"{agent}\0{source.strip()}".encode()).hexdigest()[:24]
    return f"src:{digest}"


def default_state_dir() -> Path:
    env = os.environ.get("LETTA_NB_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "letta_nb"


class CursorStore:
    """Cursors in memory, written through to SQLite. Thread-safe; writes are cheap upserts.

    `warn` receives the one-line warnings about the file (default: the "letta_nb" logger).
    """

    def __init__(
        self, path: Path | str | None = None, *, warn: Callable[[str], None] | None = None
    ) -> None:
        if path is None:
            path = os.environ.get("LETTA_NB_CURSOR_DB") or default_state_dir() / "cursors.db"
        self.path = Path(path)
        self._mem: dict[str, Cursor] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._warn = warn or log.warning
        self._failing: str | None = None  # the write problem last warned about
        self._closed = False  # closed: memory only (a late listener writes nothing)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            for statement in _BATCH_SCHEMA:
                db.execute(statement)
            cols = {row[1] for row in db.execute("PRAGMA table_info(cursors)")}
            if "records" not in cols:  # older files: records lived inside body
                db.execute("ALTER TABLE cursors ADD COLUMN records TEXT")
            db.commit()
        except BaseException:
            db.close()
            raise
        os.chmod(self.path, 0o600)
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _guarded(self, op: Callable[[sqlite3.Connection], T], default: T, doing: str) -> T:
        """Run `op` on the file; bad local state costs one warning line, never the run."""
        if self._closed:
            return default
        try:
            result = op(self._conn())
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                self._disk_problem(exc, doing)
                return default
            self._set_aside(exc)
            try:
                result = op(self._conn())
            except sqlite3.DatabaseError as again:
                self._disk_problem(again, doing)
                return default
        except OSError as exc:  # the state dir itself (permissions, a full disk at create)
            self._disk_problem(exc, doing)
            return default
        self._failing = None
        return result

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        """The file is not a readable database: move it (and its WAL) aside, start afresh."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                try:
                    os.replace(src, Path(f"{moved}{suffix}"))
                except OSError:
                    src.unlink(missing_ok=True)
        self._warn(
            f"letta_nb: the cursor store {self.path} could not be read ({exc}); moved it to "
            f"{moved.name} and started a fresh one (earlier cells start new runs when re-run)"
        )

    def _disk_problem(self, exc: BaseException, doing: str) -> None:
        """A write (or read) failed for a reason other than corruption: say it once."""
        what = " ".join(str(exc).split()) or type(exc).__name__
        if what != self._failing:
            self._failing = what
            self._warn(
                f"letta_nb: cannot {doing} the cursor store {self.path} ({what}); cursors stay "
                "in memory and runs go on on the server"
            )

    def get(self, key: str, *, records: bool = True) -> Cursor | None:
        """The cursor of `key`; with `records` its cached transcript too, read from disk.

        Memory keeps only the cheap state: the transcript of a chain followed in this kernel
        lives in its follower, and a second copy here would double the kernel's memory (a
        1,000,000-token run). The records are needed only to rebuild a chain nobody follows.
        """
        with self._lock:
            cur = self._mem.get(key)
            if cur is not None and (cur.records or not records):
                return cur

            def read(db: sqlite3.Connection) -> tuple[str, str | None] | None:
                row = db.execute("SELECT body, records FROM cursors WHERE key=?", (key,))
                found: tuple[str, str | None] | None = row.fetchone()
                return found

            row = self._guarded(read, None, "read")
            if row is None:
                return cur
            try:
                stored = Cursor.from_json(row[0], row[1])
            except (ValueError, KeyError, TypeError) as exc:  # a damaged row: only it is lost
                self._warn(f"letta_nb: the stored cursor {key!r} is unreadable ({exc}); ignored")
                return cur
            if cur is None:
                cur = self._mem[key] = _lean(stored)
            return replace(cur, records=stored.records, record_seqs=stored.record_seqs)

    def put(self, cursor: Cursor, *, persist: bool = True, records: bool = True) -> None:
        """Store `cursor`; `records=False` writes only its cheap state.

        Then the records (and their `record_seqs`) already stored are kept on disk, whatever
        `cursor.records` holds: the cost does not grow with the transcript.
        """
        cursor.updated_at = time.time()
        with self._lock:
            if not records:
                prev = self._mem.get(cursor.key)
                cursor.records = []
                cursor.record_seqs = dict(prev.resume_seqs) if prev is not None else {}
            if not persist:
                self._mem[cursor.key] = cursor
                return

            def write(db: sqlite3.Connection) -> None:
                if records:
                    db.execute(
                        "INSERT INTO cursors(key, body, updated_at, records) VALUES(?,?,?,?) "
                        "ON CONFLICT(key) DO UPDATE SET body=excluded.body, "
                        "updated_at=excluded.updated_at, records=excluded.records",
                        (cursor.key, cursor.state_json(), cursor.updated_at, cursor.records_json()),
                    )
                else:
                    db.execute(
                        "INSERT INTO cursors(key, body, updated_at) VALUES(?,?,?) "
                        "ON CONFLICT(key) DO UPDATE SET body=excluded.body, "
                        "updated_at=excluded.updated_at",
                        (cursor.key, cursor.state_json(), cursor.updated_at),
                    )
                try:
                    db.commit()
                except sqlite3.DatabaseError:
                    with contextlib.suppress(sqlite3.Error):
                        db.rollback()
                    raise

            self._guarded(write, None, "write")
            self._mem[cursor.key] = _lean(cursor)

    def delete(self, key: str) -> None:
        with self._lock:
            self._mem.pop(key, None)

            def remove(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM cursors WHERE key=?", (key,))
                db.commit()

            self._guarded(remove, None, "write")

    # ---- batches (letta_nb.batch) ---------------------------------------------------------
    # Not mirrored in memory: the batch itself holds its items; the file is what a re-run
    # after a kernel restart reads. A failing write is one warning, the batch goes on.
    def get_batch(self, key: str) -> dict[str, Any] | None:
        """A batch's stored description (agent, template, size...), None if unknown."""

        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT body FROM batches WHERE key=?", (key,)).fetchone()
            return str(row[0]) if row else None

        with self._lock:
            body = self._guarded(read, None, "read")
        return self._decoded(body, f"batch {key!r}") if body is not None else None

    def put_batch(self, key: str, body: Mapping[str, Any]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO batches(key, body, updated_at) VALUES(?,?,?) ON CONFLICT(key) "
                "DO UPDATE SET body=excluded.body, updated_at=excluded.updated_at",
                (key, _dumps(body), time.time()),
            )
            _commit(db)

        with self._lock:
            self._guarded(write, None, "write")

    def batch_items(self, key: str) -> dict[int, dict[str, Any]]:
        """Every stored item of a batch (position → its state); an unreadable row is skipped."""

        def read(db: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = db.execute("SELECT pos, body FROM batch_items WHERE batch=?", (key,))
            return [(int(pos), str(body)) for pos, body in rows]

        none: list[tuple[int, str]] = []
        with self._lock:
            rows = self._guarded(read, none, "read")
        out: dict[int, dict[str, Any]] = {}
        for pos, body in rows:
            item = self._decoded(body, f"item {pos} of batch {key!r}")
            if item is not None:
                out[pos] = item
        return out

    def put_batch_items(
        self,
        key: str,
        items: Iterable[tuple[int, Mapping[str, Any]]],
        *,
        drop_records: bool = False,
    ) -> None:
        """Store item states in one transaction; `drop_records` forgets their transcripts."""
        rows = [(key, pos, _dumps(body)) for pos, body in items]
        if not rows:
            return
        keep = "NULL" if drop_records else "batch_items.records"

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO batch_items(batch, pos, body) VALUES(?,?,?) "
                f"ON CONFLICT(batch, pos) DO UPDATE SET body=excluded.body, records={keep}",
                rows,
            )
            _commit(db)

        with self._lock:
            self._guarded(write, None, "write")

    def put_item_records(self, key: str, pos: int, records: Mapping[str, Any] | None) -> None:
        """A running item's transcript snapshot (`{"records", "seqs"}`), or None to drop it."""
        text = None if records is None else _dumps(records)

        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE batch_items SET records=? WHERE batch=? AND pos=?", (text, key, pos))
            _commit(db)

        with self._lock:
            self._guarded(write, None, "write")

    def item_records(self, key: str, pos: int) -> dict[str, Any] | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT records FROM batch_items WHERE batch=? AND pos=?", (key, pos)
            ).fetchone()
            return str(row[0]) if row and row[0] is not None else None

        with self._lock:
            body = self._guarded(read, None, "read")
        return self._decoded(body, f"records of item {pos}") if body is not None else None

    def delete_batch(self, key: str) -> None:
        def remove(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM batch_items WHERE batch=?", (key,))
            db.execute("DELETE FROM batches WHERE key=?", (key,))
            _commit(db)

        with self._lock:
            self._guarded(remove, None, "write")

    def _decoded(self, body: str, what: str) -> dict[str, Any] | None:
        try:
            value = json.loads(body)
        except ValueError as exc:
            self._warn(f"letta_nb: the stored {what} is unreadable ({exc}); ignored")
            return None
        if not isinstance(value, dict):
            self._warn(f"letta_nb: the stored {what} is unreadable (not an object); ignored")
            return None
        return value

    def close(self) -> None:
        """Release the file; afterwards the store answers from memory and writes nothing."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None


def _dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), default=str)


def _commit(db: sqlite3.Connection) -> None:
    try:
        db.commit()
    except sqlite3.DatabaseError:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _lean(cursor: Cursor) -> Cursor:
    """The cursor without its records (they stay on disk), keeping the seqs they reflect."""
    return replace(cursor, records=[], record_seqs=dict(cursor.resume_seqs))
