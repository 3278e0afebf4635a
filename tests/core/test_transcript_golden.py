"""The transcript reducer on every golden recording: dedupe, joins, implicit seqs, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from letta_nb.core.chunks import Chunk
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript
from tests.core.lnb_golden import read_frames, sse_files, starting_after, to_chunks


def _fold(*chunk_lists: list[Chunk], after: int = 0) -> Transcript:
    """Each list is one connection; `after` is where the first one started (a resume)."""
    tr = Transcript()
    for chunks in chunk_lists:
        rid = next((c.run_id for c in chunks if c.run_id), None)
        if rid is not None:
            tr.begin_stream(rid, after)
        for c in chunks:
            tr.apply(c, rid)
    return tr


def _load(root: Path, rel: str) -> list[Chunk]:
    return to_chunks(read_frames(root / rel))


def _foreground(path: Path) -> bool:
    return "foreground" in path.name


def test_every_golden_stream_folds_and_dedupes(golden_dir: Path) -> None:
    files = sse_files(golden_dir)
    assert len(files) >= 25, files
    for path in files:
        chunks = to_chunks(read_frames(path))
        after = starting_after(path)
        once = _fold(chunks, after=after)
        assert once.entries, path
        if _foreground(path):  # seq_id null everywhere: nothing to dedupe by, nothing to resume
            continue
        twice = _fold(chunks, chunks, after=after)
        assert twice.to_records() == once.to_records(), path
        assert render_text(twice) == render_text(once), path
        rid = once.run_id
        seqs = [s for s in (e.seq_first for e in once.entries) if s is not None]
        assert seqs == sorted(seqs), path
        assert once.last_seq(rid) >= max(seqs), path


def test_disconnect_plus_resume_equals_full_replay(golden_dir: Path) -> None:
    first = _load(golden_dir, "04_long_disconnect_resume/01_post_messages_stream_disconnect.sse")
    rest = _load(golden_dir, "04_long_disconnect_resume/05_resume_from_last_seq.sse")
    full = _load(golden_dir, "05_replay_finished_run/01_replay_from_0_batch_1000.sse")
    joined = Transcript()
    rid = first[0].run_id
    for c in first:
        joined.apply(c, rid)
    joined.begin_stream(rid, joined.last_seq(rid))  # what the follower does on resume
    for c in rest:
        joined.apply(c, rid)
    assert joined.to_records() == _fold(full).to_records()
    assert joined.last_seq(joined.run_id) == _fold(full).last_seq(joined.run_id) == 303


@pytest.mark.parametrize("seed", range(20))
def test_overlapping_resume_pieces_equal_full_replay(golden_dir: Path, seed: int) -> None:
    full = _load(golden_dir, "05_replay_finished_run/01_replay_from_0_batch_1000.sse")
    expected = _fold(full).to_records()
    rng = random.Random(seed)
    tr = Transcript()
    rid = full[0].run_id
    pos = 0
    stored = [0]  # the stored seq before each chunk: where a resume starting there begins
    probe = Transcript()
    for c in full:
        probe.apply(c, rid)
        stored.append(probe.last_seq(rid))
    while pos < len(full):  # each piece restarts somewhere at or before where the last ended
        start = max(0, pos - rng.randint(0, 30))
        end = min(len(full), pos + rng.randint(1, 60))
        tr.begin_stream(rid, stored[start])
        for c in full[start:end]:
            tr.apply(c, rid)
        pos = end
    assert tr.to_records() == expected


def test_deltas_join_by_id_and_hidden_frames_get_implicit_seqs(golden_dir: Path) -> None:
    tr = _fold(_load(golden_dir, "02_bg_stream_tokens_true/01_post_messages_stream.sse"))
    kinds = [e.kind for e in tr.entries]
    assert kinds == ["assistant_message", "stop_reason", "usage_statistics"]
    assistant, stop, usage = tr.entries
    assert assistant.seq_first == 2
    assert stop.seq_first == assistant.seq_last + 1
    assert usage.seq_first == stop.seq_first + 1
    assert tr.last_seq(tr.run_id) == usage.seq_first
    assert str(stop.text) == "end_turn"


def test_multistep_tool_joins_two_steps(golden_dir: Path) -> None:
    tr = _fold(_load(golden_dir, "10_multistep_tool/01_post_memory.sse"))
    call = next(e for e in tr.entries if e.kind == "tool_call_message")
    json.loads(str(call.text))  # the argument deltas join into valid JSON
    assert call.name == "memory_insert"
    ret = next(e for e in tr.entries if e.kind == "tool_return_message")
    assert ret.status == "success" and ret.tool_call_id == call.tool_call_id
    assert len([e for e in tr.entries if e.kind == "assistant_message"]) == 1


def test_pending_tool_calls_after_requires_approval(golden_dir: Path) -> None:
    tr = _fold(_load(golden_dir, "06_approval/01_approval_request_1.sse"))
    assert tr.stop_reason == "requires_approval"
    calls = tr.pending_tool_calls()
    assert len(calls) == 1
    assert calls[0]["name"] == "dangerous_op"
    assert calls[0]["tool_call_id"] == "call_6615771994"
    assert json.loads(calls[0]["arguments"]) == {"target": "prod-db", "reason": "user asked"}


def test_approval_chain_keeps_a_tracker_per_run(golden_dir: Path) -> None:
    """The answer's run restarts at seq 1: a single watermark would drop it (letta-code#4528)."""
    req = _load(golden_dir, "06_approval/01_approval_request_1.sse")
    ans = _load(golden_dir, "06_approval/05_approve.sse")
    tr = _fold(req, ans, req, ans)
    assert tr.runs == [req[0].run_id, ans[0].run_id]
    assert tr.pending_tool_calls() == []  # the newest run ended with end_turn
    first_of_answer = next(e for e in tr.entries if e.run_id == ans[0].run_id)
    assert first_of_answer.kind == "tool_return_message"
    assert tr.to_records() == _fold(req, ans).to_records()


def test_error_frames_end_the_run(golden_dir: Path) -> None:
    chunks = _load(golden_dir, "09_llm_failure/01_post_fail500.sse")
    assert chunks[-1].message_type == "error_message" and chunks[-1].is_terminal
    tr = _fold(chunks)
    assert tr.stop_reason == "llm_api_error"
    assert tr.error is not None and tr.error.seq_first == 3
    assert "error" in render_text(tr)


def test_cancelled_reader_without_done(golden_dir: Path) -> None:
    chunks = _load(golden_dir, "08_cancel/02_resume_reader2.sse")
    assert chunks[-1].message_type == "stop_reason" and chunks[-1].is_terminal
    assert _fold(chunks).stop_reason == "cancelled"


def test_keepalive_pings_are_never_data(golden_dir: Path) -> None:
    chunks = _load(golden_dir, "13_keepalive_ping/01_post_slow_stream.sse")
    pings = [c for c in chunks if c.is_ping]
    assert len(pings) >= 2  # the stored one and a keepalive repeating the last seq
    tr = _fold(chunks)
    assert all(e.kind != "ping" for e in tr.entries)
    version = tr.version
    tr.apply(pings[-1], tr.run_id)
    assert tr.version == version


def test_cached_records_restore_and_continue(golden_dir: Path) -> None:
    full = _load(golden_dir, "05_replay_finished_run/01_replay_from_0_batch_1000.sse")
    rid = full[0].run_id
    head = _fold(full[:120])
    restored = Transcript.from_records(json.loads(json.dumps(head.to_records())), head.seq_state())
    restored.begin_stream(rid, 0)
    for c in full:  # a replay from 0 after a restart: the cached part is deduped by seq
        restored.apply(c, rid)
    assert restored.to_records() == _fold(full).to_records()
