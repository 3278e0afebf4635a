"""RunReader in the test's own thread, on an in-memory server and a manual clock: no thread,
no sleep. Cuts resume from the last seq; a hole is re-read, then reported incomplete."""

from __future__ import annotations

import threading

import pytest

from letta_nb.core.clock import ManualClock
from letta_nb.core.errors import StreamInterrupted
from letta_nb.core.render import render_text
from letta_nb.core.status import ChainStatus
from letta_nb.core.transcript import Transcript
from letta_nb.run import Follower
from tests.client.fake_backend import AGENT, MemoryBackend, MemoryRun, long_run

RID = "run-00000000-0000-4000-8000-0000000000aa"
WORDS = 40  # seqs: ping 1, tokens 2..41, stop_reason 42, usage 43


def _chain(backend: MemoryBackend) -> tuple[Follower, ManualClock]:
    clock = ManualClock(instant=True)  # every backoff returns at once, and is recorded
    chain = Follower(backend, agent_id=AGENT, clock=clock)
    chain.transcript.begin_stream(RID, 0)
    chain._run_id = RID  # the chain knows its run: the reader resumes it
    return chain, clock


def _read(chain: Follower) -> ChainStatus:
    ending = chain._reader.read(
        chain._reader.resumer(RID), stop=threading.Event(), adopt=lambda rid: None
    )
    return ending.status


def _whole() -> str:
    tr = Transcript()
    for c in long_run(RID, WORDS):
        tr.apply(c, RID)
    return render_text(tr)


def test_the_reader_reads_in_the_callers_thread_and_resumes_every_cut() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.cuts = [5, 0, 0, 7, 12]  # chunks per stream before it breaks
    chain, clock = _chain(backend)
    before = set(threading.enumerate())
    assert _read(chain) == ChainStatus.COMPLETED
    assert set(threading.enumerate()) == before  # thread-free
    assert render_text(chain.transcript) == _whole() and chain.transcript.holes() == []
    afters = [after for _, after in backend.resumes]
    assert afters == [0, 5, 5, 5, 12, 24] and not backend.violations
    assert chain._reader.reconnects == 5 and chain.frames == WORDS + 2
    assert clock.waits and max(clock.waits) <= chain.backoff_cap  # bounded, never slept


def test_a_rate_limited_resume_waits_its_retry_after() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.cuts = [5]
    backend.rate_limits = [9.0, None]  # the server says when, then says nothing
    chain, clock = _chain(backend)
    assert _read(chain) == ChainStatus.COMPLETED
    assert render_text(chain.transcript) == _whole()
    assert 9.0 in clock.waits and max(w for w in clock.waits if w != 9.0) <= chain.backoff_cap


def test_the_reader_gives_up_after_its_bound_with_one_line() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.cuts = [0] * 100
    chain, clock = _chain(backend)
    chain.max_reconnects = 4
    with pytest.raises(StreamInterrupted) as info:
        _read(chain)
    line = str(info.value)
    assert "gave up after 4 reconnects" in line and f"from seq {chain.last_seq}" in line
    assert "\n" not in line and len(backend.resumes) == 5 and len(clock.waits) == 4


def test_a_hole_a_reread_fills_is_no_hole() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.drop_once = {10, 11}  # the first stream skips them, the re-read has them
    chain, _ = _chain(backend)
    assert _read(chain) == ChainStatus.COMPLETED
    assert [after for _, after in backend.resumes] == [0, 9]  # re-read from the last whole seq
    assert render_text(chain.transcript) == _whole() and chain.transcript.holes() == []
    assert chain._reader.reconnects == 1


@pytest.mark.parametrize(
    ("server_status", "shown"),
    [("completed", ChainStatus.INCOMPLETE), ("failed", ChainStatus.FAILED)],
)
def test_a_hole_the_server_keeps_is_never_completed(server_status: str, shown: str) -> None:
    """A failed commit left seqs 10-11 out of the stored run: the client says incomplete (or
    the server's `failed`), with one line naming the hole, and shows everything else."""
    run = MemoryRun(RID, long_run(RID, WORDS), status=server_status, missing={10, 11})
    backend = MemoryBackend(run)
    chain, _ = _chain(backend)
    ending = chain._reader.read(
        chain._reader.resumer(RID), stop=threading.Event(), adopt=lambda rid: None
    )
    assert ending.status == shown and ending.status != ChainStatus.COMPLETED
    assert chain.transcript.holes(RID) == [(10, 11)]
    assert ending.notice is not None and "seqs 10–11 (2 frames)" in ending.notice
    assert "\n" not in ending.notice
    text = render_text(chain.transcript)
    assert "token8 token11 " in text and "token9" not in text and "token40" in text
    assert [after for _, after in backend.resumes] == [0, 9]  # one re-read, then accepted
