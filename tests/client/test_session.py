"""Session over the fake server: revive detached/errored followers, batch_size, crash resume."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import letta_nb.connection as connection_mod
import letta_nb.session as session_mod
from letta_nb.backend import Backend
from letta_nb.core.cursor import CursorStore
from letta_nb.core.transcript import Transcript
from letta_nb.run import Follower
from letta_nb.session import Session
from tests.client.fake_letta import AGENT, FakeLetta
from tests.core.lnb_golden import read_frames, to_chunks

LONG = "05_replay_finished_run/01_replay_from_0_batch_1000.sse"
ASK = "06_approval/01_approval_request_1.sse"
APPROVE = "06_approval/05_approve.sse"
BOUND = 120.0  # a hang guard only: waits return as soon as the chain settles


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Follower, "backoff_base", 0.001)
    monkeypatch.setattr(Follower, "backoff_cap", 0.005)
    monkeypatch.setattr(Follower, "recover_delays", (0.0, 0.0))


def _session(fake: FakeLetta, db: Path) -> Session:
    backend = Backend("http://fake", None, max_retries=0, http_client=fake.client())
    return Session(backend, agent={"id": AGENT, "name": "golden agent"}, store=CursorStore(db))


def _uncut(path: Path) -> list[dict]:
    tr = Transcript()
    chunks = to_chunks(read_frames(path))
    for c in chunks:
        tr.apply(c, chunks[0].run_id)
    return tr.to_records()


def _until(pred, what: str) -> None:
    """Poll for a state the test needs (a hang guard, not a timing assertion)."""
    import time

    deadline = time.monotonic() + BOUND
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _held(fake: FakeLetta, index: int = 0) -> None:
    _until(
        lambda: len(fake.streams) > index and fake.streams[index].held.is_set(),
        "the stream never reached its hold",
    )


def test_resend_after_detach_continues_the_same_run(golden_dir: Path, tmp_path: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    fake.hold_next(20000)
    s = _session(fake, tmp_path / "c.db")
    h = s.send("LONG")
    _held(fake)
    h.detach()
    seq = h.follower.last_seq
    assert h.status == "detached" and 0 < seq < 303
    fake.runs[h.run_id].status = "running"
    again = s.send("LONG")  # re-running the cell
    assert again.follower is h.follower
    assert again.wait(BOUND) == "completed", again.error
    assert len(fake.posts) == 1 and fake.resumes == [(h.run_id, seq)]
    assert h.follower.transcript.to_records() == _uncut(golden_dir / LONG)
    assert not fake.violations


def test_attach_after_detach_continues_with_batch_size(golden_dir: Path, tmp_path: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    fake.hold_next(20000)
    s = _session(fake, tmp_path / "c.db")
    h = s.send("LONG")
    _held(fake)
    h.detach()
    seq = h.follower.last_seq
    fake.runs[h.run_id].status = "running"
    again = s.attach(h.run_id, starting_after=seq, batch_size=16)
    assert again.follower is h.follower
    assert again.wait(BOUND) == "completed", again.error
    assert fake.resumes == [(h.run_id, seq)] and fake.batch_sizes == [16]
    assert h.follower.transcript.to_records() == _uncut(golden_dir / LONG)


def test_errored_follower_is_revived_and_counts_reconnects(
    golden_dir: Path, tmp_path: Path
) -> None:
    fake = FakeLetta([golden_dir / LONG])
    fake.hold_next(20000)
    s = _session(fake, tmp_path / "c.db")
    h = s.send("LONG")
    _held(fake)
    seq = h.follower.last_seq
    fake.status_overrides[r"/runs/[^/]+/stream$"] = 503  # every resume fails: it gives up
    assert h.follower.drop_connection()
    assert h.wait(BOUND) == "error" and "gave up" in h.error
    assert h.reconnects == h.follower.max_reconnects + 1
    fake.status_overrides.clear()
    fake.runs[h.run_id].status = "running"
    again = s.send("LONG")
    assert again.follower is h.follower
    assert again.wait(BOUND) == "completed", again.error
    assert again.error is None and again.warning is None
    assert fake.resumes == [(h.run_id, seq)] and len(fake.posts) == 1
    assert h.follower.transcript.to_records() == _uncut(golden_dir / LONG)


def test_attach_and_chunks_frame_pass_batch_size(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeLetta([golden_dir / LONG])
    s = _session(fake, tmp_path / "c.db")
    rid = s.send("LONG", wait=True, timeout=BOUND).run_id
    fresh = _session(fake, tmp_path / "other.db")
    h = fresh.attach(rid, batch_size=16)
    assert h.wait(BOUND) == "completed" and fake.batch_sizes == [16]
    assert h.follower.transcript.to_records() == _uncut(golden_dir / LONG)
    monkeypatch.setattr(connection_mod, "_current", fresh)
    import letta_nb

    frame = letta_nb.chunks_frame(rid, batch_size=8)
    assert fake.batch_sizes[-1] == 8 and frame["seq_id"].max() == 303


def test_streaming_writes_no_transcript_until_a_settle_point(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "PERSIST_EVERY", 0.0)  # a cheap write per frame
    calls = []
    original = Transcript.to_records
    monkeypatch.setattr(Transcript, "to_records", lambda self: calls.append(1) or original(self))
    fake = FakeLetta([golden_dir / LONG])
    s = _session(fake, tmp_path / "c.db")
    h = s.send("LONG", wait=True, timeout=BOUND)
    assert h.status == "completed" and h.follower.frames > 300
    assert len(calls) <= 2  # the new chain and its end, not once per write
    stored = CursorStore(tmp_path / "c.db").get(h.key)
    assert stored.status == "completed" and stored.records_current
    assert stored.records == _uncut(golden_dir / LONG)


def test_kernel_crash_mid_run_resumes_from_the_records_seqs(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "PERSIST_EVERY", 0.0)
    fake = FakeLetta([golden_dir / LONG])
    gate = fake.hold_next(20000)
    db = tmp_path / "c.db"
    s = _session(fake, db)
    h = s.send("LONG")
    _held(fake)
    rid = h.run_id
    on_disk = CursorStore(db).get(h.key)  # what a crashed kernel leaves behind
    assert on_disk.status == "running" and on_disk.seqs[rid] > 0
    assert on_disk.record_seqs == {} and on_disk.records == []
    crashed = _session(fake, db)  # a new kernel over the same cursor file
    again = crashed.send("LONG")
    assert again.wait(BOUND) == "completed", again.error
    assert fake.resumes[-1] == (rid, 0) and len(fake.posts) == 1  # never a second run
    assert again.follower.transcript.to_records() == _uncut(golden_dir / LONG)
    gate.set()
    h.detach()


def test_kernel_crash_in_the_answer_run_keeps_the_first_runs_records(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "PERSIST_EVERY", 0.0)
    fake = FakeLetta([golden_dir / ASK, golden_dir / APPROVE])
    db = tmp_path / "c.db"
    s = _session(fake, db)
    h = s.send("APPROVE", wait=True, timeout=BOUND)
    assert h.status == "requires_approval"
    first = h.run_id
    gate = fake.hold_next(2800)
    h.approve()
    _held(fake, 1)
    second = h.run_id
    on_disk = CursorStore(db).get(h.key)
    assert on_disk.runs == [first, second] and on_disk.seqs[second] > 0
    assert on_disk.record_seqs == {first: on_disk.seqs[first]}
    crashed = _session(fake, db)
    again = crashed.send("APPROVE")
    assert again.wait(BOUND) == "completed", again.error
    assert fake.resumes[-1] == (second, 0) and len(fake.posts) == 2
    gate.set()
    assert h.wait(BOUND) == "completed"
    assert again.follower.transcript.to_records() == h.follower.transcript.to_records()
    assert again.runs == [first, second]


def test_a_chain_too_big_to_cache_is_rebuilt_by_replay(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over CACHE_CHARS the cursor keeps no transcript copy; a new kernel replays every run of
    the chain from the server (bounded by the cursor's seqs) and starts no run."""
    monkeypatch.setattr(session_mod, "CACHE_CHARS", 10)
    fake = FakeLetta([golden_dir / ASK, golden_dir / APPROVE])
    db = tmp_path / "c.db"
    s = _session(fake, db)
    h = s.send("APPROVE", wait=True, timeout=BOUND)
    assert h.status == "requires_approval"
    h.approve()
    assert h.wait(BOUND) == "completed", h.error
    first, second = h.runs
    on_disk = CursorStore(db).get(h.key)
    assert on_disk.status == "completed" and on_disk.records == [] and on_disk.record_seqs == {}
    again = _session(fake, db).send("APPROVE")  # a new kernel over the same cursor file
    assert again.wait(BOUND) == "completed", again.error
    assert len(fake.posts) == 2  # the question and the approval: nothing re-sent
    assert (first, 0) in fake.resumes and (second, 0) in fake.resumes
    assert again.runs == [first, second]
    assert again.follower.transcript.to_records() == h.follower.transcript.to_records()


def test_detach_then_attach_revives_the_same_chain_and_its_view_sees_everything(
    golden_dir: Path, tmp_path: Path
) -> None:
    """The original cell's view listens to the chain: while detached it is told where the
    chain stopped (and the text it holds ends there); after `attach` the same chain goes on,
    so that view ends `completed` with the whole text, never with a part of it."""
    fake = FakeLetta([golden_dir / LONG])
    fake.hold_next(20000)
    s = _session(fake, tmp_path / "c.db")
    h = s.send("LONG")
    seen: list[tuple[str, int, int]] = []  # (status, last_seq, transcript seq) per notification
    h.follower.add_listener(
        lambda f: seen.append((f.status, f.last_seq, f.transcript.last_seq(f.run_id)))
    )
    _held(fake)
    h.detach()
    detached_at = h.follower.last_seq
    assert h.status == "detached" and 0 < detached_at < 303
    assert seen[-1] == ("detached", detached_at, detached_at)  # the truth: where it stopped
    fake.runs[h.run_id].status = "running"
    again = s.attach(h.run_id)
    assert again.follower is h.follower  # revived, not a second chain beside the first view
    assert again.wait(BOUND) == "completed", again.error
    assert seen[-1][0] == "completed" and seen[-1][1] == 303
    done = [entry for entry in seen if entry[0] == "completed"]
    assert done and all(seq == 303 for _, seq, _ in done)  # "completed" only with everything
    assert h.follower.transcript.to_records() == _uncut(golden_dir / LONG)
    assert fake.resumes == [(h.run_id, detached_at)]


def test_a_restored_chain_has_no_reader_and_the_servers_durations(
    golden_dir: Path, tmp_path: Path
) -> None:
    """After a kernel restart a finished cell is shown from its cursor (`Follower.restored`):
    no thread, no send, and its active time is the server's run duration, never 0.0 s."""
    fake = FakeLetta([golden_dir / LONG])
    db = tmp_path / "c.db"
    h = _session(fake, db).send("LONG", wait=True, timeout=BOUND)
    assert h.status == "completed"
    measured = CursorStore(db).get(h.key).active_seconds
    assert measured > 0.0
    fake.runs[h.run_id].total_duration_ns = 7_250_000_000  # the server's figure: 7.25 s
    resumes = len(fake.resumes)
    again = _session(fake, db).send("LONG")  # a new kernel over the same cursor file
    f = again.follower
    assert again.status == "completed" and f._thread is None and len(fake.posts) == 1
    assert f.active_seconds > 0.0  # the cursor's figure at once
    _until(lambda: f.active_seconds == 7.25, "the server's duration never arrived")
    assert len(fake.resumes) == resumes  # nothing re-read
    assert again.transcript == h.transcript


def test_an_incomplete_chain_stays_incomplete_after_a_restart(
    golden_dir: Path, tmp_path: Path
) -> None:
    fake = FakeLetta([golden_dir / LONG])
    original = fake._serve

    def serve(frames):  # the stored run lacks seqs 50-52, every time it is read
        return original([fr for fr in frames if not 50 <= (fr.seq or 0) <= 52])

    fake._serve = serve
    db = tmp_path / "c.db"
    h = _session(fake, db).send("LONG", wait=True, timeout=BOUND)
    assert h.status == "incomplete", h.error
    assert h.warning and "seqs 50–52 (3 frames)" in h.warning
    posts = len(fake.posts)
    again = _session(fake, db).send("LONG")
    assert again.status == "incomplete" and again.warning == h.warning
    assert len(fake.posts) == posts and again.transcript == h.transcript


def test_kernels_connecting_at_once_create_one_demo_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernel A holds the agent lock while it creates the agent; kernel B, connecting at the
    same moment, waits for it and then finds A's agent instead of creating a second one."""
    from letta_nb.core.errors import NotFound
    from tests.client.fake_backend import MemoryBackend

    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path / "state"))
    agents: list[dict] = []
    b_resolved = threading.Event()

    class Server(MemoryBackend):
        def __init__(self, kernel: str) -> None:
            super().__init__()
            self.kernel = kernel

        def resolve_agent(self, name_or_id: str) -> dict:
            if self.kernel == "B":
                b_resolved.set()
            found = [a for a in agents if a["name"] == name_or_id]
            if not found:
                raise NotFound(f"unknown agent '{name_or_id}'")
            return found[0]

        def create_agent(self, name: str, model: str = "letta_nb/demo", **kw: object) -> dict:
            if self.kernel == "A":  # B connects while A is creating
                other.start()
                assert not b_resolved.wait(0.2), "B looked the agent up inside A's lock"
            agents.append({"id": f"agent-{len(agents)}", "name": name, "model": model})
            return agents[-1]

    a = Session(Server("A"), store=CursorStore(tmp_path / "a.db"))
    b = Session(Server("B"), store=CursorStore(tmp_path / "b.db"))
    found: list[dict] = []
    other = threading.Thread(target=lambda: found.append(b.ensure_agent()))
    made = a.ensure_agent()
    other.join(BOUND)
    assert b_resolved.is_set() and found == [made] and len(agents) == 1
