"""A run's stored frames are contiguous or the run failed, visibly.

Attacks: another SQLite connection holds the write lock (briefly, then for longer than the
retry budget) and the database fills up (``max_page_count``: SQLite's own "database or disk is
full") while a background run streams. Invariants: a brief lock is ridden out (nothing lost);
otherwise the run ends ``failed`` with an error frame readers see right after the last stored
frame, nothing after the hole is ever stored, status and cancel answer at once (no zombie), the
end is stored once storage allows, and a restart closes what could not be stored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from letta_nb.server import EmbeddedServer, start_in_process
from letta_nb.server.storage import FrameGap, FrameWriter, Store
from tests.server.scripted_brain import HANDLE, ScriptedBrain
from tests.server.server_helpers import wait_until

pytestmark = pytest.mark.timeout(180)
BG = {"streaming": True, "background": True, "stream_tokens": True, "include_pings": True}


def _server(db: Path, **settings: object) -> EmbeddedServer:
    brain = ScriptedBrain()
    return start_in_process(db, brains={brain.handle: brain}, **settings)  # type: ignore[arg-type]


def _frames(body: bytes) -> list[bytes]:
    return [f + b"\n\n" for f in body.split(b"\n\n") if f]


def _seq(frame: bytes) -> int | None:
    data = frame.split(b"data: ", 1)[1]
    if data.startswith(b"[DONE]"):
        return None
    return json.loads(data).get("seq_id")


def _contiguous(frames: list[bytes]) -> bool:
    """Frame i of a background run is seq i (stop_reason frames carry no seq_id but count)."""
    return all(_seq(f) in (None, i) for i, f in enumerate(frames, 1))


def _stored(db: Path, run_id: str) -> tuple[list[int], list[bytes], str]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT seq, data FROM frames WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        status = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    return [r[0] for r in rows], [bytes(r[1]) for r in rows], status


class _Reader:
    """Follows a background run from its POST, frame by frame."""

    def __init__(self, srv: EmbeddedServer, agent_id: str, text: str) -> None:
        self.client = httpx.Client(base_url=srv.base_url, timeout=60)
        self._cm = self.client.stream(
            "POST",
            f"/v1/agents/{agent_id}/messages",
            json={"messages": [{"role": "user", "content": text}], **BG},
        )
        self.resp = self._cm.__enter__()
        self._it = self.resp.iter_bytes()
        self.buf = b""
        self.frames: list[bytes] = []

    def until(self, n: int) -> None:
        for chunk in self._it:
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n\n")
            self.frames.extend(f + b"\n\n" for f in done if f)
            if len(self.frames) >= n:
                return

    def rest(self) -> list[bytes]:
        self.until(10**9)
        self._cm.__exit__(None, None, None)
        self.client.close()
        return self.frames

    @property
    def run_id(self) -> str:
        return json.loads(self.frames[0].split(b"data: ", 1)[1])["run_id"]


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, str, Path]]:
    db = tmp_path / "s.sqlite3"
    srv = _server(db, busy_timeout_ms=50, write_retry_seconds=0.3)
    try:
        agent_id = httpx.post(srv.base_url + "/v1/agents/", json={"model": HANDLE}).json()["id"]
        yield srv, agent_id, db
    finally:
        srv.stop()


def test_a_brief_lock_is_retried_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.sqlite3"
    caplog.set_level(logging.WARNING, logger="letta_nb.server.storage")
    with _server(db, busy_timeout_ms=50, write_retry_seconds=60) as srv:
        agent_id = httpx.post(srv.base_url + "/v1/agents/", json={"model": HANDLE}).json()["id"]
        reader = _Reader(srv, agent_id, "long 3000 1")
        reader.until(20)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
        try:
            wait_until(lambda: "retrying" in caplog.text, 60, "the writer never met the lock")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        frames = reader.rest()
        run = httpx.get(f"{srv.base_url}/v1/runs/{reader.run_id}").json()
    assert run["status"] == "completed"
    seqs, stored, status = _stored(db, reader.run_id)
    assert status == "completed" and seqs == list(range(1, 3000 + 5))
    assert b"".join(stored) == b"".join(frames)  # what the reader saw is what is stored


def test_a_lock_held_too_long_fails_the_run_visibly_then_stores_its_end(
    agent: tuple[EmbeddedServer, str, Path],
) -> None:
    srv, agent_id, db = agent
    reader = _Reader(srv, agent_id, "long 6000 1")
    reader.until(20)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        frames = reader.rest()  # ends: the reader is never left waiting
        assert frames[-2] == b'data: {"message_type":"stop_reason","stop_reason":"error"}\n\n'
        assert frames[-1].startswith(b"event: error\ndata: ")
        error = json.loads(frames[-1].split(b"data: ", 1)[1])
        assert "could not store" in error["message"]
        assert _contiguous(frames)  # no hole before the error
        assert len(frames) < 6000  # stopped, not run to the end behind a hole
        run_url = f"{srv.base_url}/v1/runs/{reader.run_id}"
        assert httpx.get(run_url).json()["status"] == "failed"  # no zombie "running"
        cancel = httpx.post(
            f"{srv.base_url}/v1/agents/{agent_id}/messages/cancel",
            json={"run_ids": [reader.run_id]},
        )
        assert cancel.json() == {reader.run_id: "cancelled"}
        replay = httpx.post(run_url + "/stream", json={}).content  # served from memory
        assert replay == b"".join(frames)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # storage is free again: the end is stored, once, right after the last stored frame
    wait_until(lambda: _stored(db, reader.run_id)[2] == "failed", 120, "end never stored")
    seqs, stored, _ = _stored(db, reader.run_id)
    assert seqs == list(range(1, len(frames) + 1)) and b"".join(stored) == b"".join(frames)
    assert httpx.post(run_url + "/stream", json={}).content == b"".join(frames)


def test_an_end_that_cannot_be_stored_is_closed_by_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    srv = _server(db, busy_timeout_ms=50, write_retry_seconds=0.3)
    agent_id = httpx.post(srv.base_url + "/v1/agents/", json={"model": HANDLE}).json()["id"]
    reader = _Reader(srv, agent_id, "long 6000 1")
    reader.until(20)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        frames = reader.rest()
        assert frames[-1].startswith(b"event: error\ndata: ")
        srv.stop()  # the server goes away before storage takes the run's end
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    seqs, _, status = _stored(db, reader.run_id)
    assert status == "running" and seqs == list(range(1, len(seqs) + 1))
    with _server(db) as again:
        run = httpx.get(f"{again.base_url}/v1/runs/{reader.run_id}").json()
        assert (run["status"], run["stop_reason"]) == ("failed", "error")
        url = f"{again.base_url}/v1/runs/{reader.run_id}/stream"
        replay = _frames(httpx.post(url, json={}).content)
    assert replay[: len(seqs)] == frames[: len(seqs)]
    assert replay[-1].startswith(b"event: error\ndata: ") and _contiguous(replay)


def test_a_full_disk_fails_the_run_and_nothing_lands_behind_the_hole(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    with _server(db, sqlite_pragmas=("max_page_count=8000",), write_retry_seconds=0.2) as srv:
        agent_id = httpx.post(srv.base_url + "/v1/agents/", json={"model": HANDLE}).json()["id"]
        reader = _Reader(srv, agent_id, "long 200000")
        frames = reader.rest()
        run_id = reader.run_id
        assert frames[-1].startswith(b"event: error\ndata: ") and b"full" in frames[-1]
        assert 20000 < len(frames) < 200000 and _contiguous(frames)
        assert httpx.get(f"{srv.base_url}/v1/runs/{run_id}").json()["status"] == "failed"
        seqs, stored, _ = _stored(db, run_id)
        assert seqs == list(range(1, len(seqs) + 1))  # a prefix of what readers saw
        assert stored == frames[: len(seqs)]
        assert httpx.get(srv.base_url + "/v1/health/").status_code == 200
    with _server(db) as srv:  # room again: whatever was not stored is closed after the prefix
        run = httpx.get(f"{srv.base_url}/v1/runs/{run_id}").json()
        assert (run["status"], run["stop_reason"]) == ("failed", "error")
        replay = _frames(httpx.post(f"{srv.base_url}/v1/runs/{run_id}/stream", json={}).content)
        assert replay[: len(seqs)] == frames[: len(seqs)]
        assert replay[-1].startswith(b"event: error\ndata: ") and _contiguous(replay)


def test_the_writer_never_stores_a_frame_behind_a_hole(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    results: list[list] = []
    writer = FrameWriter(store.path, store.write_lock, results.append)
    try:
        writer.submit([("run-a", 1, [b"1", b"2"])])
        writer.submit([("run-a", 4, [b"4"]), ("run-b", 2, [b"x"])])  # holes: 3, and b's 1
        writer.submit([("run-a", 3, [b"3"])])

        def outcome() -> dict:
            return {(r[0], r[1]): r[3] for batch in results for r in batch}

        def stored() -> list[int]:
            return [seq for seq, _ in store.read_frames("run-a", 0, 10)]

        wait_until(lambda: len(outcome()) >= 3 and stored() == [1, 2, 3], 30, "writer")
    finally:
        writer.close()
    gaps = {key for key, error in outcome().items() if isinstance(error, FrameGap)}
    assert gaps == {("run-a", 4), ("run-b", 2)}
    assert store.read_frames("run-b", 0, 10) == []
    store.close()
