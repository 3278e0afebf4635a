"""The one bounded replay: resumes after cuts, stops at a known end, records holes, and the
tables built from it (`stored_frames`) equal the stored run."""

from __future__ import annotations

from letta_nb.core.clock import ManualClock
from letta_nb.core.transcript import Transcript
from letta_nb.run import Backoff, RunEnd, replay, stored_frames
from tests.client.fake_backend import MemoryBackend, MemoryRun, long_run

RID = "run-00000000-0000-4000-8000-0000000000bb"
WORDS = 40  # seqs: ping 1, tokens 2..41, stop_reason 42, usage 43


def test_replay_reads_to_a_known_end_through_cuts_and_never_past_it() -> None:
    """The one bounded replay (session rebuilds, tables, tails): resumes, stops at `until`."""
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.cuts = [3, 0, 9]
    tr = Transcript()
    clock = ManualClock(instant=True)
    done = replay(backend, RID, tr, RunEnd(), until=30, backoff=Backoff(clock=clock), clock=clock)
    assert done.reached and tr.last_seq(RID) == 30 and done.reconnects == 3
    assert [after for _, after in backend.resumes] == [0, 3, 3, 12]
    again = replay(backend, RID, tr, RunEnd(), until=30, clock=clock)
    assert again.reached and again.frames == 0 and len(backend.resumes) == 4  # nothing to read
    end = RunEnd()
    replay(backend, RID, tr, end, final=True, clock=clock)  # to the run's end: usage
    assert end.over and end.stop_reason == "end_turn" and tr.last_seq(RID) == WORDS + 3
    assert not backend.violations


def test_stored_frames_give_every_frame_once_through_cuts_and_name_the_holes() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.cuts = [0, 10, 0, 0, 20]
    clock = ManualClock(instant=True)
    log = stored_frames(backend, RID, clock=clock)  # a finished run: read to its end
    assert [c.seq_id for c in log.frames] == list(range(1, WORDS + 4)) and log.holes == []
    assert [c.message_type for c in log.frames[-2:]] == ["stop_reason", "usage_statistics"]
    holed = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS), missing={5}))
    log = stored_frames(holed, RID, clock=clock)
    assert log.holes == [(5, 5)] and 5 not in [c.seq_id for c in log.frames]
    assert len(log.frames) == WORDS + 2 and not holed.violations
    part = stored_frames(MemoryBackend(MemoryRun(RID, long_run(RID, WORDS))), RID, until=12)
    assert [c.seq_id for c in part.frames] == list(range(1, 13))  # a followed run: its cursor
