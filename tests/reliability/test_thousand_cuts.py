"""1,000 injected cuts between letta_nb's real Backend + Follower and the embedded server.

Chain: Follower -> Backend (letta_client) -> FaultProxy -> embedded server (in-process uvicorn).
The proxy cuts SSE responses at frame boundaries, mid-frame (also inside chunk-size lines), drops
some POST responses before their head, and stalls. Waves of concurrent runs (one per agent:
``/long N`` of varied N and delay, and the multi-step ``/tool``) go on until at least 1,000 cuts
were injected. Every run is then checked frame by frame against the server: the chunks the
follower's transcript accepted equal the run replayed from seq 0 over a direct connection
(seq, message_type, payload), the seqs are the server's frame log 1..last, and no agent got a
run it was not sent. Half of the agents' backends re-send a broken send with its otid (the
embedded server re-attaches it), the other half look the run up in the agent's run list.

Reproduce a failure with ``LETTA_NB_CUT_SEED=<seed>`` (the seed is in the assertion message).
``LETTA_NB_SOAK=1`` raises the target to 10,000 cuts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from letta_nb.backend import Backend
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript
from letta_nb.run import Follower
from letta_nb.server import start_in_process
from tests.reliability.fault_proxy import FaultPlan, FaultProxy
from tests.reliability.rel_helpers import RecordingTranscript, db_seqs, diff_frames, replay

SOAK = os.environ.get("LETTA_NB_SOAK") == "1"
SEED = int(os.environ.get("LETTA_NB_CUT_SEED", "1000"))
TARGET = 10_000 if SOAK else 1_000
AGENTS = 6
MAX_WAVES = 400 if SOAK else 60
#: (directive, expected stored frames) cycled over the agents and waves
SCHEDULE = [
    ("/long 150", 154),
    ("/tool", 38),
    ("/long 300 1", 304),
    ("/long 80 2", 84),
    ("/long 220", 224),
    ("/tool", 38),
    ("/long 40", 44),
    ("/long 120 1", 124),
]
PLAN = FaultPlan(
    cut_at_boundary=0.45,
    cut_mid_frame=0.37,
    stall=0.12,
    stall_then_cut=0.5,
    stall_seconds=(0.02, 0.2),
    frames=(0, 12),
    chunk_header_share=0.3,
    cut_before_headers=0.04,
    rst=0.5,
)

pytestmark = pytest.mark.timeout(1800 if SOAK else 300)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[object]:
    srv = start_in_process(tmp_path / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


def test_thousand_cuts_lose_and_duplicate_nothing(
    server: object, capsys: pytest.CaptureFixture
) -> None:
    t0 = time.monotonic()
    base_url: str = server.base_url  # type: ignore[attr-defined]
    db: Path = server.db_path  # type: ignore[attr-defined]
    direct = Backend(base_url)
    agents = [direct.create_agent(f"cuts-{i}")["id"] for i in range(AGENTS)]
    sent: dict[str, int] = dict.fromkeys(agents, 0)
    checked_runs = frames_verified = 0
    with FaultProxy("127.0.0.1", int(base_url.rsplit(":", 1)[1]), seed=SEED, plan=PLAN) as proxy:
        by_otid = Backend(proxy.base_url)
        by_otid.reattaches_otid = True  # the embedded server re-attaches a re-sent otid
        by_list = Backend(proxy.base_url)  # generic path: find the run in the agent's runs
        wave = 0
        while proxy.stats.cuts < TARGET and wave < MAX_WAVES:
            followers: list[tuple[Follower, RecordingTranscript, str, int]] = []
            for i, agent_id in enumerate(agents):
                directive, expected = SCHEDULE[(wave + i) % len(SCHEDULE)]
                tr = RecordingTranscript()
                backend = by_otid if i % 2 == 0 else by_list
                f = Follower(backend, agent_id=agent_id, transcript=tr, max_reconnects=30)
                f.backoff_base = 0.02  # keep the test fast; the policy (bounded, jittered) stays
                f.start([{"role": "user", "content": directive}])
                sent[agent_id] += 1
                followers.append((f, tr, directive, expected))
            for f, tr, directive, expected in followers:
                ctx = f"seed={SEED} wave={wave} {directive} agent={f.agent_id}"
                status = f.wait(120)
                assert status == "completed", f"{ctx}: status {status}, error {f.error}"
                assert len(f.runs) == 1, f"{ctx}: chain has runs {f.runs}"
                rid = f.runs[0]
                want = replay(direct, rid)
                got = tr.accepted.get(rid, [])
                assert not diff_frames(got, want), f"{ctx} run={rid}: {diff_frames(got, want)}"
                seqs = [s for s, _, _ in want]
                assert seqs == db_seqs(db, rid) == list(range(1, expected)), ctx
                assert db_seqs(db, rid, with_done=True) == list(range(1, expected + 1)), ctx
                # the same text a fault-free reader shows
                assert render_text(f.transcript) == _replayed_text(direct, rid), ctx
                checked_runs += 1
                frames_verified += len(got)
            wave += 1
        stats = proxy.stats
    for agent_id in agents:  # no send created a second run, no cut lost one
        runs = direct.list_runs(agent_id=agent_id, limit=1000)
        assert len(runs) == sent[agent_id], (
            f"agent {agent_id}: {len(runs)} runs for {sent[agent_id]} sends (seed={SEED})"
        )
    elapsed = time.monotonic() - t0
    assert stats.internal_errors == 0
    assert stats.cuts >= TARGET, f"only {stats.cuts} cuts in {MAX_WAVES} waves"
    with capsys.disabled():
        print(
            f"\n[thousand-cuts] seed={SEED} cuts={stats.cuts} (boundary={stats.cuts_boundary} "
            f"mid-frame={stats.cuts_mid_frame} chunk-size-line={stats.cuts_chunk_header} "
            f"before-headers={stats.cuts_before_headers}) stalls={stats.stalls} "
            f"runs={checked_runs} frames_verified={frames_verified} "
            f"connections={stats.connections} wall={elapsed:.1f}s"
        )


def _replayed_text(backend: Backend, run_id: str) -> str:
    """The transcript text of the run folded from a fault-free replay."""
    tr = Transcript()
    tr.begin_stream(run_id, 0)
    stream = backend.resume(run_id, 0, include_pings=False, timeout=30.0)
    try:
        for chunk in stream:
            tr.apply(chunk, run_id)
    finally:
        stream.close()
    return render_text(tr)
