"""SQLite never runs on the event loop: while another connection holds the write lock (a
writer stuck behind it), health, reads and streams are answered at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx

from letta_nb.server import start_in_process
from tests.server.scripted_brain import HANDLE, ScriptedBrain
from tests.server.server_helpers import wait_until


def test_health_and_reads_answer_while_a_write_waits_for_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    brain = ScriptedBrain()
    with start_in_process(db, brains={brain.handle: brain}) as srv:
        h = httpx.Client(base_url=srv.base_url, timeout=60)
        agent = h.post("/v1/agents/", json={"name": "before", "model": HANDLE}).json()["id"]
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        blocked: list[httpx.Response] = []
        writer = threading.Thread(
            target=lambda: blocked.append(
                httpx.post(srv.base_url + "/v1/agents/", json={"model": HANDLE}, timeout=60)
            )
        )
        latencies = []
        try:
            writer.start()
            wait_until(lambda: srv.app.state.engine.writes_waiting() > 0, 30, "write not queued")
            for _ in range(20):
                started = time.perf_counter()
                assert h.get("/v1/health/").status_code == 200
                latencies.append(time.perf_counter() - started)
            assert h.get(f"/v1/agents/{agent}").json()["name"] == "before"  # reads too
            assert writer.is_alive() and not blocked  # all of it while the write still waits
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        writer.join(60)
        assert blocked and blocked[0].status_code == 200  # the write then goes through
        h.close()
    print(f"\n[db] health while locked: max {max(latencies) * 1000:.1f} ms over 20 calls")
