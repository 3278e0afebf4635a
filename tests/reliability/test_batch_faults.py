"""Issue 15.5: a batch through the fault proxy, cutting streams and REST answers.

Chain: Session.map -> Runner -> Followers -> Backend (letta_client) -> FaultProxy -> embedded
server. The proxy cuts SSE streams at frame boundaries and mid-frame, drops POST answers
before their head (the send reached the server, the client never heard), cuts REST bodies and
stalls. Every item must end `completed` with exactly its answer (no token lost or doubled) and
the server must hold exactly one run per item (no send repeated into a second run) and exactly
one conversation per item holding only that item (a create whose answer was cut is looked up
by its summary, never made twice: the lookups are counted, so the path is covered). Twice the
"kernel" goes away (the batch is detached) and a fresh session over the same `cursors.db`
re-attaches through the proxy: running items are followed from their cursors (REST reads of
their runs, cut too), unsent ones sent.

Reproduce a failure with ``LETTA_NB_CUT_SEED=<seed>`` (in every assertion message).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from letta_nb.backend import Backend
from letta_nb.core.cursor import CursorStore
from letta_nb.server import start_in_process
from letta_nb.session import Session
from tests.reliability.fault_proxy import FaultPlan, FaultProxy

SEED = int(os.environ.get("LETTA_NB_CUT_SEED", "1500"))
ITEMS = 30
PLAN = FaultPlan(
    cut_at_boundary=0.3,
    cut_mid_frame=0.3,
    stall=0.08,
    stall_then_cut=0.5,
    stall_seconds=(0.02, 0.15),
    frames=(0, 12),
    cut_before_headers=0.15,
    cut_rest=0.45,
    rst=0.5,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[object]:
    srv = start_in_process(tmp_path / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


def _tokens(n: int) -> str:
    return " ".join(f"token{i}" for i in range(1, n + 1))


def test_a_batch_through_stream_and_rest_cuts_answers_every_item_exactly_once(
    server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check_isolation: Any
) -> None:
    # running items store their cursor often, so the re-attach resumes them from it (after
    # a REST read of each run: the kernel died mid-run, not mid-first-second)
    monkeypatch.setattr("letta_nb.batch.chains.RECORDS_EVERY", 0.02)
    base_url: str = server.base_url  # type: ignore[attr-defined]
    direct = Backend(base_url)
    agent = direct.create_agent(f"batch-cuts-{uuid.uuid4().hex[:8]}")
    sizes = [20 + (i * 7) % 23 for i in range(ITEMS)]
    messages = [f"/long {n} {i % 3}" for i, n in enumerate(sizes)]
    port = int(base_url.rsplit(":", 1)[1])
    lookups: list[str] = []
    listing = Backend.list_conversations

    def looked_up(self: Backend, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        if kw.get("summary_search"):
            lookups.append(kw["summary_search"])
        return listing(self, *args, **kw)

    monkeypatch.setattr(Backend, "list_conversations", looked_up)
    with FaultProxy("127.0.0.1", port, seed=SEED, plan=PLAN) as proxy:
        backend = Backend(proxy.base_url, max_retries=8)
        backend.reattaches_otid = True  # the embedded server re-attaches a re-sent otid
        backend.retry_base = 0.02
        session = Session(backend, store=CursorStore(tmp_path / "cursors.db"))
        session.agent = session._remember(agent)
        batch = session.map(messages, concurrency=6)
        for part in (4, 2):  # the kernel dies twice: after a quarter, after half the items
            deadline = time.monotonic() + 120
            while batch.done < ITEMS // part:  # bounded polling
                assert time.monotonic() < deadline, f"seed={SEED}: {batch.counts}"
                batch.wait(0.05)
            batch.detach()  # the kernel goes away; the runs go on on the server
            fresh = Session(backend, store=CursorStore(tmp_path / "cursors.db"))
            fresh.agent = fresh._remember(agent)
            batch = fresh.map(messages, concurrency=6)
        status = batch.wait(240)
        stats = proxy.stats
        batch.detach()
    ctx = f"seed={SEED} {stats}"
    assert status == "done", f"{ctx}: {batch.counts}"
    frame = batch.frame
    errors = frame.error[frame.error.notna()].tolist()
    assert batch.counts == {"completed": ITEMS}, f"{ctx}: {batch.counts} {errors[:3]}"
    for i, n in enumerate(sizes):  # every token once, in order: nothing lost, nothing doubled
        assert frame.answer[i] == _tokens(n), f"{ctx}: item {i}"
    runs = direct.list_runs(agent_id=agent["id"], limit=1000)
    assert len(runs) == ITEMS, f"{ctx}: {len(runs)} runs for {ITEMS} items"
    assert sorted(r["id"] for r in runs) == sorted(frame.run_id), ctx
    items = [(messages[i.pos], i.conversation_id, i.answer, i.runs) for i in batch.items]
    check_isolation(base_url, agent["id"], items)  # one conversation per item, its item only
    assert lookups, f"{ctx}: no conversation create was cut (the lookup path is not covered)"
    print(f"\n[batch faults] {ITEMS} items, {len(runs)} runs, {len(items)} conversations, "
          f"{len(lookups)} conversation lookups; {ctx}")  # fmt: skip
    assert stats.internal_errors == 0
    for kind in ("cuts_boundary", "cuts_mid_frame", "cuts_before_headers", "cuts_rest"):
        assert getattr(stats, kind) > 0, f"{ctx}: no {kind} injected"
