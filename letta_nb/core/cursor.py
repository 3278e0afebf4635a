"""Run cursors: where a cell's run chain is, kept in kernel memory and in a small SQLite file.

A cursor is what makes re-running a cell resume instead of restart: the agent, the chain of
runs (an approval starts a new run), the last seq of each, the status and the cached
transcript. The file lives in the user's state directory (mode 0600) so a kernel restart
finds it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


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

    @property
    def run_id(self) -> str | None:
        return self.runs[-1] if self.runs else None

    @property
    def last_seq(self) -> int:
        rid = self.run_id
        return self.seqs.get(rid, 0) if rid else 0

    def to_json(self) -> str:
        return json.dumps({
            "key": self.key, "agent_id": self.agent_id, "runs": self.runs, "seqs": self.seqs,
            "status": self.status, "stop_reason": self.stop_reason, "records": self.records,
            "message": self.message, "updated_at": self.updated_at,
        }, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        raw: Mapping[str, Any] = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__slots__ if k in raw})  # type: ignore[attr-defined]


def cell_key(*, notebook: str | None, cell_id: str | None, agent: str, source: str,
             explicit: str | None = None) -> str:
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
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return Path(base) / "letta_nb"


class CursorStore:
    """Cursors in memory, written through to SQLite. Thread-safe; writes are cheap upserts."""

    def __init__(self, path: Path | str | None = None) -> None:
        if path is None:
            path = os.environ.get("LETTA_NB_CURSOR_DB") or default_state_dir() / "cursors.db"
        self.path = Path(path)
        self._mem: dict[str, Cursor] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            if fresh:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.commit()
            os.chmod(self.path, 0o600)
            self._db = db
        return self._db

    def get(self, key: str) -> Cursor | None:
        with self._lock:
            cur = self._mem.get(key)
            if cur is not None:
                return cur
            row = self._conn().execute("SELECT body FROM cursors WHERE key=?", (key,)).fetchone()
            if row is None:
                return None
            cur = Cursor.from_json(row[0])
            self._mem[key] = cur
            return cur

    def put(self, cursor: Cursor, *, persist: bool = True) -> None:
        cursor.updated_at = time.time()
        with self._lock:
            self._mem[cursor.key] = cursor
            if persist:
                db = self._conn()
                db.execute(
                    "INSERT INTO cursors(key, body, updated_at) VALUES(?,?,?) "
                    "ON CONFLICT(key) DO UPDATE SET body=excluded.body, "
                    "updated_at=excluded.updated_at",
                    (cursor.key, cursor.to_json(), cursor.updated_at),
                )
                db.commit()

    def delete(self, key: str) -> None:
        with self._lock:
            self._mem.pop(key, None)
            db = self._conn()
            db.execute("DELETE FROM cursors WHERE key=?", (key,))
            db.commit()

    def find_by_run(self, run_id: str) -> Cursor | None:
        with self._lock:
            for cur in self._mem.values():
                if run_id in cur.runs:
                    return cur
            for (body,) in self._conn().execute(
                "SELECT body FROM cursors ORDER BY updated_at DESC"
            ):
                cur = Cursor.from_json(body)
                if run_id in cur.runs:
                    return cur
        return None

    def all(self) -> list[Cursor]:
        with self._lock:
            rows = self._conn().execute("SELECT body FROM cursors ORDER BY updated_at").fetchall()
        seen = {c.key: c for c in (Cursor.from_json(b) for (b,) in rows)}
        seen.update(self._mem)
        return sorted(seen.values(), key=lambda c: c.updated_at)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
