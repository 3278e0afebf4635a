"""The first POST of a conversation send cut by the fault proxy: recovered by its otid, exactly
one run on the server, every frame once.

Chain: Follower -> Backend (letta_client) -> FaultProxy -> embedded server. The proxy drops the
send's response before its head, or right after its head before the first frame: the server
started the run, the client never learnt its id. The follower resumes the conversation by the
send's otid (`POST /v1/conversations/{id}/stream {"otid"}`) on any server, or re-sends the same
otid where no run has it; the embedded server re-attaches a re-sent otid too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import FaultPlan, FaultProxy
from rel_helpers import RecordingTranscript, db_seqs, diff_frames, replay

from letta_nb.backend import Backend
from letta_nb.run import Follower
from letta_nb.server import start_in_process

PLANS = {
    "before its head": FaultPlan(cut_before_headers=1.0, max_faults=1),
    "before its first frame": FaultPlan(cut_at_boundary=1.0, frames=(0, 0), max_faults=1),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    srv = start_in_process(tmp_path_factory.mktemp("conv-cuts") / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("reattaches", [False, True], ids=["any server", "embedded"])
@pytest.mark.parametrize("where", list(PLANS))
def test_a_cut_first_post_is_recovered_by_otid_as_one_run(
    server: object, where: str, reattaches: bool
) -> None:
    base_url: str = server.base_url  # type: ignore[attr-defined]
    db: Path = server.db_path  # type: ignore[attr-defined]
    direct = Backend(base_url)
    agent = direct.create_agent(f"conv-cuts-{where}-{reattaches}")["id"]
    conv = direct.create_conversation(agent)["id"]
    with FaultProxy(
        "127.0.0.1", int(base_url.rsplit(":", 1)[1]), seed=14, plan=PLANS[where]
    ) as proxy:
        backend = Backend(proxy.base_url)
        backend.reattaches_otid = reattaches
        tr = RecordingTranscript()
        f = Follower(backend, agent_id=agent, transcript=tr, conversation_id=conv)
        f.backoff_base = 0.02
        f.start(
            [{"role": "user", "content": "/long 60"}], otid="otid-cut-" + where.replace(" ", "-")
        )
        assert f.wait(60) == "completed", f.error
        stats = proxy.stats
    assert stats.faults == 1 and stats.internal_errors == 0  # the first POST was cut, once
    runs = direct.list_runs(conversation_id=conv)
    assert [r["id"] for r in runs] == f.runs  # exactly one run, the one the chain followed
    assert len(direct.list_runs(agent_id=agent)) == 1
    rid = f.runs[0]
    assert not diff_frames(tr.accepted[rid], replay(direct, rid))  # every frame, once
    assert db_seqs(db, rid) == list(range(1, 64)) and f.reconnects >= 1
    assert f.busy_run is None
