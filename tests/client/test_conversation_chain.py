"""The run chain in a conversation, on an in-memory server: a send that broke before its first
frame is found by its otid (or sent again with it when no run has it): one run either way; a
busy conversation is followed, not failed; approvals are answered in the conversation."""

from __future__ import annotations

from fake_backend import AGENT, MemoryBackend, MemoryRun, long_run

from letta_nb.core.clock import ManualClock
from letta_nb.core.errors import ConversationBusy, StreamInterrupted
from letta_nb.core.status import ChainStatus
from letta_nb.run import Follower

CONV = "conv-00000000-0000-4000-8000-0000000000c1"
RID = "run-00000000-0000-4000-8000-0000000000a1"
HOLDER = "run-00000000-0000-4000-8000-0000000000b2"
WORDS = 12


def _chain(backend: MemoryBackend) -> Follower:
    return Follower(backend, agent_id=AGENT, clock=ManualClock(instant=True), conversation_id=CONV)


def test_a_send_that_broke_before_its_first_frame_is_resumed_by_its_otid() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.sends = [RID]  # the POST reached the server and started the run ...
    backend.cuts = [0]  # ... but its stream broke before the first frame
    chain = _chain(backend)
    chain.start([{"role": "user", "content": "hi"}], otid="otid-1")
    assert chain.wait(10) == ChainStatus.COMPLETED, chain.error
    assert chain.runs == [RID] and len(backend.sent) == 1  # found, never sent twice
    assert backend.otid_resumes == [(CONV, "otid-1")]
    assert backend.sent[0]["conversation"] == CONV and chain.busy_run is None


def test_a_send_that_never_arrived_is_sent_again_with_the_same_otid() -> None:
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.sends = [StreamInterrupted("the POST broke before any byte"), RID]
    chain = _chain(backend)
    chain.start([{"role": "user", "content": "hi"}], otid="otid-2")
    assert chain.wait(10) == ChainStatus.COMPLETED, chain.error
    assert backend.otid_resumes == [(CONV, "otid-2")]  # no run had that otid (a 404) ...
    assert [s["otid"] for s in backend.sent] == ["otid-2", "otid-2"]  # ... so: sent again
    assert chain.runs == [RID]


def test_a_busy_conversation_is_followed_and_says_so() -> None:
    backend = MemoryBackend(MemoryRun(HOLDER, long_run(HOLDER, WORDS)))
    backend.sends = [ConversationBusy("send: the conversation is busy", run_id=HOLDER)]
    chain = _chain(backend)
    chain.start([{"role": "user", "content": "mine"}], otid="otid-3")
    assert chain.wait(10) == ChainStatus.COMPLETED, chain.error
    assert chain.runs == [HOLDER] and chain.busy_run == HOLDER and len(backend.sent) == 1
    assert f"busy with run {HOLDER}" in (chain.warning or "")
    assert "not sent" in (chain.notice or "")


def test_a_re_send_refused_by_its_own_run_is_no_busy_conversation() -> None:
    """The first POST started the run (and holds the lock) but its answer was lost before
    the server mapped the otid: the re-send is refused as busy by that very run."""
    backend = MemoryBackend(MemoryRun(RID, long_run(RID, WORDS)))
    backend.sends = [
        StreamInterrupted("the POST broke before any byte"),
        ConversationBusy("send: the conversation is busy", run_id=RID),
    ]
    backend.messages[RID] = [{"message_type": "user_message", "otid": "otid-4"}]
    chain = _chain(backend)
    chain.start([{"role": "user", "content": "hi"}], otid="otid-4")
    assert chain.wait(10) == ChainStatus.COMPLETED, chain.error
    assert chain.runs == [RID] and chain.busy_run is None and not chain.notice


def test_an_approval_in_a_conversation_is_answered_there() -> None:
    gate = long_run(RID, 2, stop_reason="requires_approval")
    answer = "run-00000000-0000-4000-8000-0000000000a2"
    backend = MemoryBackend(MemoryRun(RID, gate), MemoryRun(answer, long_run(answer, 3)))
    backend.sends = [RID, answer]
    chain = _chain(backend)
    chain.start([{"role": "user", "content": "gated"}], otid="otid-5")
    assert chain.wait(10) == ChainStatus.REQUIRES_APPROVAL, chain.error
    chain.answer(True)
    assert chain.wait(10) == ChainStatus.COMPLETED, chain.error
    assert [s["conversation"] for s in backend.sent] == [CONV, CONV]
    assert backend.sent[1]["messages"][0]["type"] == "approval" and chain.runs == [RID, answer]
