"""Every read resumes: a link that cuts every connection after 600-20,000 bytes.

Chain: `letta_nb.connect` (Session, Backend, Follower) -> FaultProxy (`byte_budget`: each
connection is cut after a seeded number of bytes, in a head, a JSON body or a stream alike)
-> the embedded server. Through it, as a user on a flaky link: connecting creates the demo
agent once; creating agents never makes duplicates; resolving an agent by id (a REST body of a
few KB) works; a `/long 3000 1` run completes; its `RunHandle.chunks`, `chunks_frame` (in this
kernel and in a fresh one) and the runs frame equal the server's own log (the SQLite frame and
run tables), with no extra run and nothing lost or doubled.

`LETTA_NB_CUT_SEED=<seed>` replays a seed (it is in every assertion message).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb.backend import Backend
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript
from letta_nb.server import start_in_process
from letta_nb.session import DEMO_AGENT, Session
from tests.reliability.fault_proxy import FaultPlan, FaultProxy
from tests.reliability.rel_helpers import canon, db_seqs, diff_frames, replay

SEED = int(os.environ.get("LETTA_NB_CUT_SEED", "1100"))
PLAN = FaultPlan(byte_budget=(600, 20_000), rst=0.5)
WORDS = 3000
pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path / "client"))
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.delenv("LETTA_BASE_URL", raising=False)
    srv = start_in_process(tmp_path / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


def _db(server: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _rows(frame: Any) -> list[tuple[int, str, str]]:
    """(seq, message_type, payload) of a chunks table, as `rel_helpers.replay` gives them."""
    return [
        (int(seq), str(kind), canon(data))
        for seq, kind, data in zip(
            frame["seq_id"], frame["message_type"], frame["data"], strict=True
        )
        if kind != "ping"
    ]


def test_every_read_resumes_through_a_link_that_cuts_every_connection(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    port = int(server.base_url.rsplit(":", 1)[1])
    direct = Backend(server.base_url)
    with FaultProxy("127.0.0.1", port, seed=SEED, plan=PLAN) as proxy:
        ctx = f"seed={SEED}"
        session = letta_nb.connect(proxy.base_url)  # resolves, then creates the demo agent
        agent = session.agent
        assert agent is not None and agent["name"] == DEMO_AGENT, ctx
        for i in range(5):  # POSTs whose answers break: looked up by name, never doubled
            session.backend.create_agent(f"cut-agent-{i}")
        names = [n for (n,) in _db(server, "SELECT name FROM agents")]
        assert sorted(names) == sorted([DEMO_AGENT, *(f"cut-agent-{i}" for i in range(5))]), ctx
        assert session.backend.resolve_agent(agent["id"])["name"] == DEMO_AGENT, ctx

        handle = session.send(f"/long {WORDS} 1", wait=True, timeout=240)
        assert handle.status == "completed", f"{ctx}: {handle.status} {handle.error}"
        rid = handle.run_id
        assert rid is not None
        want = replay(direct, rid)  # fault-free, direct
        seqs = db_seqs(server.db_path, rid)
        assert [s for s, _, _ in want] == seqs == list(range(1, WORDS + 4)), ctx
        assert render_text(handle.follower.transcript) == _text(direct, rid), ctx

        chunks = handle.chunks  # this kernel: up to its cursor
        assert list(chunks["seq_id"]) == seqs, ctx
        assert not diff_frames(_rows(chunks), [f for f in want if f[1] != "ping"]), ctx
        framed = session.chunks_frame(rid)
        assert list(framed["seq_id"]) == seqs, ctx
        other = Session(Backend(proxy.base_url), agent=agent, store=session.store)
        fresh = other.chunks_frame(rid)  # nobody follows it there: read to the run's end
        assert _rows(fresh) == _rows(chunks), ctx

        runs = session.runs_frame(agent=DEMO_AGENT, limit=500)
        stored = _db(
            server, "SELECT id FROM runs WHERE agent_id = ? ORDER BY ord DESC", agent["id"]
        )
        assert list(runs["run_id"]) == [r for (r,) in stored] == [rid], ctx  # no extra run
        assert runs["status"].astype(str).tolist() == ["completed"], ctx
        stats = proxy.stats
    assert stats.internal_errors == 0
    assert stats.cuts_budget >= 50, f"{ctx}: only {stats.cuts_budget} cuts"
    with capsys.disabled():
        print(
            f"\n[rest-cuts] seed={SEED} budget={PLAN.byte_budget} cuts={stats.cuts} "
            f"connections={stats.connections} run_frames={len(seqs)} "
            f"reconnects={handle.reconnects} chunks_rows={len(chunks)} "
            f"bytes_to_client={stats.bytes_to_client:,} wall={time.monotonic() - t0:.1f}s"
        )


def _text(backend: Backend, run_id: str) -> str:
    tr = Transcript()
    tr.begin_stream(run_id, 0)
    stream = backend.resume(run_id, 0, include_pings=False, timeout=30.0)
    try:
        for chunk in stream:
            tr.apply(chunk, run_id)
    finally:
        stream.close()
    return render_text(tr)
