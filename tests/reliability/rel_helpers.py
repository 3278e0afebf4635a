"""Shared helpers of the reliability tests: record what a follower accepted, replay the truth.

Why: "0 lost, 0 duplicated" is checked frame by frame. The follower's side is every chunk its
transcript accepted (after its own seq dedupe), in order; the server's side is the run replayed
from seq 0 over a direct connection (no proxy), cross-checked against the raw frame log in the
server's SQLite file.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from letta_nb.core.chunks import Chunk, SeqTracker
from letta_nb.core.transcript import Transcript
from letta_nb.protocol import MessageType as MT

Frame = tuple[int, str, str]  # (seq, message_type, canonical JSON of the payload)


def canon(data: Any) -> str:
    return json.dumps(dict(data), sort_keys=True, default=str)


class RecordingTranscript(Transcript):
    """A Transcript that also keeps every chunk it accepted, per run, in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: dict[str, list[Frame]] = {}

    def apply(self, chunk: Chunk, run_id: str | None = None) -> Chunk | None:
        acc = super().apply(chunk, run_id)
        if acc is not None:
            rid = acc.run_id or run_id or "?"
            self.accepted.setdefault(rid, []).append(
                (int(acc.seq_id or 0), acc.message_type, canon(acc.data))
            )
        return acc


def replay(backend: Any, run_id: str) -> list[Frame]:
    """Every stored frame of a finished run, read from seq 0 without any fault in between."""
    tracker = SeqTracker(run_id)
    tracker.begin(0)
    out: list[Frame] = []
    stream = backend.resume(run_id, 0, include_pings=False, timeout=30.0)
    try:
        for chunk in stream:
            acc = tracker.accept(chunk)
            if acc is None:
                continue
            out.append((int(acc.seq_id or 0), acc.message_type, canon(acc.data)))
            if acc.message_type == MT.ERROR or (
                acc.message_type == MT.STOP_REASON and acc.data.get("stop_reason") == "cancelled"
            ):
                break
    finally:
        stream.close()
    return out


def db_seqs(db_path: Path, run_id: str, *, with_done: bool = False) -> list[int]:
    """The seqs of the run's frame log, straight from the server's SQLite file (read-only).

    The stored ``data: [DONE]`` frame uses a seq but is no chunk: left out unless `with_done`.
    """
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT seq, data FROM frames WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    finally:
        con.close()
    return [int(seq) for seq, data in rows if with_done or bytes(data).strip() != b"data: [DONE]"]


def diff_frames(got: list[Frame], want: list[Frame]) -> str:
    """A short description of how two frame lists differ ('' when equal)."""
    if got == want:
        return ""
    seqs = [f[0] for f in got]
    dups = sorted({s for s in seqs if seqs.count(s) > 1})
    have = set(seqs)
    lost = [f[0] for f in want if f[0] not in have]
    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    where = ""
    if first is not None:
        where = f"; first difference at index {first}: got {got[first]!r} want {want[first]!r}"
    return (
        f"got {len(got)} frames, want {len(want)}; duplicated seqs {dups[:10]}; "
        f"lost seqs {lost[:10]}{where}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def spawn_server(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A real `letta-nb server` process on `db` and `port`, once its health check answers."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "letta_nb.cli", "server", "--port", str(port), "--db", str(db)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1/health/"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(healthy, 60, 0.1), "server did not become healthy"
    return proc
