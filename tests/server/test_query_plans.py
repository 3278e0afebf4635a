"""Every query a conversation send, resume or history read makes uses an index: with many
conversations on one agent (a batch gives each row its own) a table scan made each send cost
more than the one before (the messages of a conversation were found by scanning them all)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from letta_client import Letta

from letta_nb.server import start_in_process
from letta_nb.server.storage import store as store_module
from tests.server.scripted_brain import HANDLE, ScriptedBrain

#: Tables that grow with use (agents and tools stay small: scanning them is fine).
GROWING = ("messages", "runs", "conversations", "frames", "run_otids", "steps")


def test_conversation_sends_and_reads_never_scan_a_growing_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    lock = threading.Lock()
    real = store_module.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real(*args, **kwargs)

        def record(sql: str) -> None:
            with lock:
                statements.append(sql)

        db.set_trace_callback(record)
        return db

    monkeypatch.setattr(store_module, "connect", traced)
    brain = ScriptedBrain()
    path = tmp_path / "s.sqlite3"
    with start_in_process(path, brains={brain.handle: brain}) as srv:
        client = Letta(base_url=srv.base_url, max_retries=0)
        agent = client.agents.create(name="plans", model=HANDLE).id
        for n in range(3):
            conv = client.conversations.create(agent_id=agent, summary=f"item {n}").id
            stream = client.conversations.messages.create(
                conv,
                messages=[{"role": "user", "content": "echo hi", "otid": f"otid-{n}"}],
                streaming=True,
                background=True,
            )
            run_id = next(c.run_id for c in stream if getattr(c, "run_id", None))
            list(stream)
            list(client.conversations.messages.list(conv))
            list(client.runs.messages.stream(run_id, starting_after=0))
            client.runs.list(conversation_id=conv)
            client.conversations.list(agent_id=agent, summary_search=f"item {n}")
        with lock:
            seen = sorted({s for s in statements if s.lstrip().upper().startswith("SELECT")})
    assert len(seen) > 5
    db = sqlite3.connect(path)
    scans = []
    for sql in seen:
        for row in db.execute("EXPLAIN QUERY PLAN " + sql).fetchall():
            detail = str(row[-1])
            if any(detail.startswith(f"SCAN {t}") and "USING" not in detail for t in GROWING):
                scans.append(f"{detail}  <-  {sql}")
    db.close()
    assert scans == []
