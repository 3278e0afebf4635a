"""SeqTracker: a hole in a run's seqs is refused (never folded silently), then recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from letta_nb.core.chunks import Chunk, SeqTracker
from letta_nb.core.errors import SeqGap
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript
from tests.core.lnb_golden import read_frames, to_chunks

RID = "run-1"


def _say(seq: int | None, text: str = "x") -> Chunk:
    return Chunk("assistant_message", {"id": "m1", "content": text}, RID, seq)


def test_a_frame_past_a_hole_is_refused_and_folds_nothing() -> None:
    tr = Transcript()
    tr.apply(Chunk("ping", {}, RID, 1), RID)
    tr.apply(_say(2, "a"), RID)
    version = tr.version
    with pytest.raises(SeqGap) as info:
        tr.apply(_say(5, "d"), RID)
    gap = info.value
    assert (gap.run_id, gap.after, gap.seq) == (RID, 2, 5)
    assert "seqs 3..4 are missing" in str(gap)
    assert tr.version == version and tr.last_seq(RID) == 2 and render_text(tr) == "a"
    tr.apply(_say(3, "b"), RID)  # the re-read brings the missing frames: no hole at all
    tr.apply(_say(4, "c"), RID)
    tr.apply(_say(5, "d"), RID)
    assert render_text(tr) == "abcd" and tr.holes() == []


def test_a_confirmed_hole_is_recorded_and_reading_continues() -> None:
    tr = Transcript()
    tr.apply(_say(1, "a"), RID)
    with pytest.raises(SeqGap):
        tr.apply(_say(4, "d"), RID)
    tr.skip_hole(RID, 4)
    assert tr.apply(_say(4, "d"), RID) is not None
    stop = tr.apply(Chunk("stop_reason", {"stop_reason": "end_turn"}), RID)
    assert stop is not None and stop.seq_id == 5  # hidden frames count on after the hole
    assert tr.holes(RID) == [(2, 3)] and tr.holes() == [(2, 3)]
    assert render_text(tr).startswith("ad")


def test_a_deliberate_skip_is_not_a_hole() -> None:
    """attach(run, starting_after=N): the frames up to N are not expected."""
    tracker = SeqTracker(RID)
    tracker.begin(20)
    assert tracker.accept(_say(21)) is not None and tracker.holes == []
    tracker.begin(10)  # an overlapping resume never lowers the watermark
    assert tracker.accept(_say(15)) is None and tracker.last_seq == 21


def test_keepalive_pings_and_seqless_frames_never_make_a_hole() -> None:
    tracker = SeqTracker(RID)
    assert tracker.accept(Chunk("ping", {}, RID, 1)) is not None
    assert tracker.accept(Chunk("ping", {}, RID, 1)) is None  # keepalive repeating seq 1
    assert tracker.accept(Chunk("ping", {}, RID, None)) is None
    for _ in range(3):  # a foreground stream: no seqs at all, always contiguous
        assert tracker.accept(_say(None)) is not None
    assert tracker.last_seq == 4 and tracker.holes == []


def test_every_golden_stream_has_contiguous_seqs(golden_dir: Path) -> None:
    """Real Letta streams are contiguous from 1: the gap check raises on none of them."""
    for path in sorted(golden_dir.glob("*/*.sse")):
        if "resume" in path.name or "reader2" in path.name:
            continue  # these start after a cursor
        tr = Transcript()
        chunks = to_chunks(read_frames(path))
        rid = next((c.run_id for c in chunks if c.run_id), None)
        for c in chunks:
            tr.apply(c, rid)
