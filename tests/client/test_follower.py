"""Follower against a fake server whose streams break at random points."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from letta_nb.backend import Backend
from letta_nb.core.clock import ManualClock
from letta_nb.core.errors import ApprovalError
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript
from letta_nb.run import Follower
from tests.client.fake_letta import AGENT, FakeLetta
from tests.core.lnb_golden import read_frames, to_chunks

LONG = "05_replay_finished_run/01_replay_from_0_batch_1000.sse"
BOUND = 120.0  # hang guard only: wait() returns as soon as the chain settles


def _follower(fake: FakeLetta, **kw: Any) -> Follower:
    backend = Backend("http://fake", None, max_retries=0, http_client=fake.client())
    f = Follower(backend, agent_id=AGENT, stall_after=kw.pop("stall_after", 30.0), **kw)
    f.backoff_base = 0.001
    f.backoff_cap = 0.005
    f.recover_delays = (0.0, 0.0)
    f.tail_timeout = 0.5
    return f


def _until(pred: Any, what: str) -> None:
    """Deadline polling for a state the test needs (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + BOUND
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _uncut(path: Path) -> Transcript:
    tr = Transcript()
    chunks = to_chunks(read_frames(path))
    for c in chunks:
        tr.apply(c, chunks[0].run_id)
    return tr


@pytest.mark.parametrize("seed", range(24))
def test_random_cuts_never_lose_duplicate_or_resend(golden_dir: Path, seed: int) -> None:
    fake = FakeLetta([golden_dir / LONG], seed=seed, cut_rate=0.8, clean_eof_rate=0.3)
    f = _follower(fake, max_reconnects=50)
    f.start([{"role": "user", "content": "LONG WORDS=300"}])
    assert f.wait(BOUND) == "completed", (f.status, f.error)
    assert len(fake.posts) == 1  # never a second run
    assert f.reconnects == len(fake.resumes)  # every resume after a break/EOF is counted
    assert not fake.violations  # never resumed at/after the end
    expected = _uncut(golden_dir / LONG)
    assert f.transcript.to_records() == expected.to_records(), (fake.resumes, f.warning)
    assert render_text(f.transcript) == render_text(expected)
    assert f.last_seq == 303 and f.runs == [expected.run_id]


def test_cut_before_the_first_frame_recovers_the_run_id(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG], seed=1)
    cuts = iter([True])  # only the POST is cut, at byte 0

    original = fake._serve

    def serve(frames):
        resp = original(frames)
        if next(cuts, False):
            resp.stream.cut, resp.stream.error = 0, httpx.ReadError
        return resp

    fake._serve = serve
    f = _follower(fake)
    f.start([{"role": "user", "content": "hi"}])
    assert f.wait(BOUND) == "completed", f.error
    assert len(fake.posts) == 1
    assert fake.resumes and fake.resumes[0][1] == 0
    assert f.transcript.to_records() == _uncut(golden_dir / LONG).to_records()


def test_terminal_frames_end_without_resume(golden_dir: Path) -> None:
    for rel, status in [
        ("02_bg_stream_tokens_true/01_post_messages_stream.sse", "completed"),
        ("09_llm_failure/01_post_fail500.sse", "failed"),
        ("08_cancel/01_post_long_stream_reader1.sse", "cancelled"),
    ]:
        fake = FakeLetta([golden_dir / rel])
        f = _follower(fake)
        f.start([{"role": "user", "content": "x"}])
        assert f.wait(BOUND) == status, (rel, f.error)
        assert fake.resumes == [] and not fake.violations, rel
    assert f.error is None or "\n" not in f.error


def test_error_frame_sets_a_one_line_error(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / "09_llm_failure/01_post_fail500.sse"])
    f = _follower(fake)
    f.start([{"role": "user", "content": "FAIL500"}])
    assert f.wait(BOUND) == "failed"
    assert f.error == "An error occurred with the LLM request."


def test_eof_without_terminal_resumes(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    original = fake._serve
    first = [True]

    def serve(frames):
        resp = original(frames)
        if first.pop() if first else False:  # the POST ends cleanly after a few frames
            resp.stream.cut = resp.stream.body.index(b"\n\n", 3000) + 2
        return resp

    fake._serve = serve
    f = _follower(fake)
    f.start([{"role": "user", "content": "x"}])
    assert f.wait(BOUND) == "completed"
    assert len(fake.resumes) == 1 and fake.resumes[0][1] > 1


def test_stop_reason_then_eof_reads_the_tail_once(golden_dir: Path) -> None:
    rel = "02_bg_stream_tokens_true/01_post_messages_stream.sse"
    fake = FakeLetta([golden_dir / rel])
    original = fake._serve
    first = [True]

    def serve(frames):
        resp = original(frames)
        if first.pop() if first else False:  # cut right after the stop_reason frame
            body = resp.stream.body
            resp.stream.cut = body.index(b'"stop_reason":"end_turn"}') + 27
        return resp

    fake._serve = serve
    f = _follower(fake)
    f.start([{"role": "user", "content": "x"}])
    assert f.wait(BOUND) == "completed"
    assert len(fake.resumes) == 1 and not fake.violations
    assert f.transcript.to_records() == _uncut(golden_dir / rel).to_records()


def test_a_run_whose_frames_stop_early_is_incomplete_never_completed(golden_dir: Path) -> None:
    """The server calls the run completed, but its stream ends ([DONE]) at seq 10 every time:
    after `eof_checks` empty streams the follower asks the server and says incomplete."""
    fake = FakeLetta([golden_dir / LONG])
    f = _follower(fake)
    f.start([{"role": "user", "content": "x"}])
    assert f.wait(BOUND) == "completed"
    rid = f.run_id
    fake.runs[rid].frames = [fr for fr in fake.runs[rid].frames if fr.seq <= 10 or fr.done]
    g = _follower(fake)
    g.eof_checks = 2
    g.follow(rid)
    assert g.wait(BOUND) == "incomplete", g.error
    assert g.last_seq == 10 and len(fake.resumes) >= 2
    assert g.warning and "frames stop at seq 10" in g.warning and "\n" not in g.warning


def test_unknown_run_is_one_line_not_found() -> None:
    fake = FakeLetta([])
    f = _follower(fake)
    f.follow("run-00000000-0000-4000-8000-000000001234")
    assert f.wait(BOUND) == "error"
    assert "run run-00000000-0000-4000-8000-000000001234 was not found" in f.error
    assert "\n" not in f.error and "Traceback" not in f.error


def test_approval_answer_follows_the_new_run_in_the_same_transcript(golden_dir: Path) -> None:
    fake = FakeLetta(
        [
            golden_dir / "06_approval/01_approval_request_1.sse",
            golden_dir / "06_approval/05_approve.sse",
        ]
    )
    f = _follower(fake)
    seen: list[str] = []
    f.add_listener(lambda fol: seen.append(fol.status))
    f.start([{"role": "user", "content": "APPROVE"}])
    assert f.wait(BOUND) == "requires_approval"
    state = f.approval
    assert state is not None and state.open
    assert state.tool_calls[0]["tool_call_id"] == "call_6615771994"
    first_run = f.run_id
    f.answer(True)
    with pytest.raises(ApprovalError):
        f.answer(False, "too late")
    assert f.wait(BOUND) == "completed", f.error
    assert state.state == "approved" and state.outcome_run_id == f.run_id != first_run
    assert f.runs == [first_run, f.run_id]
    body = fake.posts[1]["messages"][0]
    assert body["type"] == "approval" and body["approvals"][0]["approve"] is True
    assert body["otid"] != fake.posts[0]["messages"][0]["otid"]
    assert "requires_approval" in seen and seen[-1] == "completed"
    text = render_text(f.transcript)
    assert "approval requested: dangerous_op" in text and "← dangerous_op" in text


def test_policy_answers_unattended(golden_dir: Path) -> None:
    fake = FakeLetta(
        [
            golden_dir / "06_approval/01_approval_request_1.sse",
            golden_dir / "06_approval/09_deny_with_reason.sse",
        ]
    )
    f = _follower(fake, policy="deny")
    f.start([{"role": "user", "content": "APPROVE"}])
    assert f.wait(BOUND) == "completed", f.error
    answer = fake.posts[1]["messages"][0]["approvals"][0]
    assert answer["approve"] is False and answer["reason"]
    assert f.approval.state == "denied"


def test_incomplete_arguments_come_from_the_agent(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / "06_approval/01_approval_request_1.sse"])
    full = {
        "tool_call_id": "call_6615771994",
        "name": "dangerous_op",
        "arguments": '{"target": "prod-db"}',
    }
    fake.pending = [full]
    original = fake._serve

    def serve(frames):  # drop the later argument deltas: the stream has '{"target' only
        keep = [
            fr
            for fr in frames
            if not (
                isinstance(fr.data, dict)
                and fr.data.get("message_type") == "approval_request_message"
                and fr.seq > 3
            )
        ]
        return original(keep)

    fake._serve = serve
    f = _follower(fake)
    f.start([{"role": "user", "content": "APPROVE"}])
    assert f.wait(BOUND) == "requires_approval"
    assert f.approval.tool_calls == [full]


def test_stall_warning_comes_and_goes(golden_dir: Path) -> None:
    """The watchdog reads the follower's clock: the test moves time, nothing sleeps."""
    fake = FakeLetta([golden_dir / "02_bg_stream_tokens_true/01_post_messages_stream.sse"])
    gate = threading.Event()

    def pause(pos: int) -> None:
        if pos >= 700:  # after the first piece (the ping): silence until released
            gate.wait(BOUND)

    fake.pause = pause
    clock = ManualClock()
    f = _follower(fake, stall_after=10.0, clock=clock)
    warned = threading.Event()
    warnings: list[str | None] = []

    def listener(fol: Follower) -> None:
        warnings.append(fol.warning)
        if fol.warning and "stalled" in fol.warning:
            warned.set()

    f.add_listener(listener)
    f.start([{"role": "user", "content": "x"}])
    _until(lambda: f.status == "running" and fake.streams, "the run never started")
    checks = len(clock.waits)
    clock.advance(9.0)
    _until(lambda: len(clock.waits) > checks, "the watchdog never looked")
    assert not warned.is_set()  # it looked after 9 s of silence: not yet a stall
    clock.advance(2.0)
    assert warned.wait(BOUND)
    assert f.warning == "no data for 11 s: the run may be stalled (Cancel stops it server-side)"
    assert f.status == "running"
    gate.set()
    assert f.wait(BOUND) == "completed"
    assert f.warning is None and any(w and "stalled" in w for w in warnings)


def test_detach_is_local_and_cancel_is_server_side(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    gate = threading.Event()
    fake.pause = lambda pos: gate.wait(BOUND) if pos >= 1400 else None
    f = _follower(fake)
    f.start([{"role": "user", "content": "x"}])
    assert f.cancel() == "cancelled"  # waits (bounded) for the run id, then asks the server
    assert fake.cancelled == [f.run_id]
    f.detach()
    assert f.status == "detached" and f.wait(1) == "detached"
    seq = f.last_seq
    reader = f._thread
    gate.set()
    assert reader is not None
    reader.join(BOUND)  # the reader noticed its stop event and ended
    assert not reader.is_alive()
    assert f.last_seq == seq and f.status == "detached"  # stopped reading, cursor kept
    assert seq >= 1


def test_no_background_break_says_it_cannot_resume(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG], seed=3)
    original = fake._serve

    def serve(frames):
        resp = original(frames)
        resp.stream.cut, resp.stream.error = 5000, httpx.ReadError
        return resp

    fake._serve = serve
    f = _follower(fake)
    f.start([{"role": "user", "content": "x"}], background=False, timeout=30)
    assert f.wait(BOUND) == "error"
    assert "cannot be resumed" in f.error and fake.resumes == []


def test_drop_connection_heals_counts_and_warns(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    fake.hold_next(20000)
    f = _follower(fake)
    warnings: list[str | None] = []
    f.add_listener(lambda fol: warnings.append(fol.warning))
    f.start([{"role": "user", "content": "x"}])
    _until(lambda: fake.streams and fake.streams[0].held.is_set(), "never held")
    seq = f.last_seq
    assert f.reconnects == 0 and f.drop_connection()
    assert f.wait(BOUND) == "completed", f.error
    assert f.reconnects == 1 and fake.resumes == [(f.run_id, seq)] and len(fake.posts) == 1
    assert f"reconnecting to run {f.run_id} after seq {seq}" in " ".join(filter(None, warnings))
    assert f.warning is None and not f.drop_connection()  # nothing open any more
    assert f.transcript.to_records() == _uncut(golden_dir / LONG).to_records()


def test_answer_while_the_reader_is_still_publishing_the_approval(golden_dir: Path) -> None:
    """A UI reacting to status == requires_approval may answer before the reader exits."""
    fake = FakeLetta(
        [
            golden_dir / "06_approval/01_approval_request_1.sse",
            golden_dir / "06_approval/05_approve.sse",
        ]
    )
    f = _follower(fake)
    seen, release = threading.Event(), threading.Event()

    def listener(fol: Follower) -> None:
        if fol.status == "requires_approval" and not seen.is_set():
            seen.set()
            release.wait(1.0)  # the reader is still inside its notify

    f.add_listener(listener)
    f.start([{"role": "user", "content": "APPROVE"}])
    assert seen.wait(BOUND)
    f.answer(True)
    release.set()
    assert f.wait(BOUND) == "completed", f.error
    assert f.approval.state == "approved" and len(f.runs) == 2 and len(fake.posts) == 2


def test_a_person_answering_first_wins_over_a_slow_policy(golden_dir: Path) -> None:
    fake = FakeLetta(
        [
            golden_dir / "06_approval/01_approval_request_1.sse",
            golden_dir / "06_approval/09_deny_with_reason.sse",
        ]
    )
    asked = threading.Event()

    def policy(calls: list[dict]) -> bool:
        asked.set()
        deadline = time.monotonic() + BOUND
        while f.approval.state == "pending" and time.monotonic() < deadline:
            time.sleep(0.005)  # a slow policy: the person answers meanwhile
        return True

    f = _follower(fake, policy=policy)
    f.start([{"role": "user", "content": "APPROVE"}])
    assert asked.wait(BOUND)
    f.answer(False, "no")
    assert f.wait(BOUND) == "completed", f.error
    assert f.approval.state == "denied" and len(fake.posts) == 2
    assert fake.posts[1]["messages"][0]["approvals"][0]["approve"] is False
