"""An in-memory Letta server behind the `LettaBackend` Protocol (checked by mypy).

For reading tests that need no HTTP: runs are lists of chunks as a server stores them (seq 1
the ping, hidden seqs for stop_reason/usage), streams can be cut after N chunks (a broken
connection) or end early as if the server finished them, and frames can be missing (a hole).
Every resume is recorded; a resume at/after a run's end is a violation (a real server hangs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from letta_nb._protocols import LettaBackend
from letta_nb.core.chunks import Chunk
from letta_nb.core.errors import NotFound, RateLimited, StreamInterrupted, Unreachable

AGENT = "agent-memory"


def long_run(run_id: str, words: int, *, stop_reason: str = "end_turn") -> list[Chunk]:
    """A finished `/long N`-like run: ping, N assistant deltas, stop_reason, usage."""
    chunks = [Chunk("ping", {"message_type": "ping", "run_id": run_id, "seq_id": 1}, run_id, 1)]
    for i in range(words):
        data = {
            "message_type": "assistant_message",
            "id": "message-1",
            "content": f"token{i + 1} ",
            "run_id": run_id,
            "seq_id": i + 2,
        }
        chunks.append(Chunk("assistant_message", data, run_id, i + 2))
    chunks.append(Chunk("stop_reason", {"message_type": "stop_reason", "stop_reason": stop_reason}))
    chunks.append(
        Chunk("usage_statistics", {"message_type": "usage_statistics", "total_tokens": words})
    )
    return chunks


def seq_of(chunks: list[Chunk], index: int) -> int:
    """The stored seq of `chunks[index]` (hidden frames: previous + 1)."""
    seq = 0
    for c in chunks[: index + 1]:
        seq = c.seq_id if c.seq_id is not None else seq + 1
    return seq


@dataclass
class MemoryRun:
    id: str
    chunks: list[Chunk]
    status: str = "completed"
    stop_reason: str | None = "end_turn"
    total_duration_ns: int | None = None
    #: Stored seqs the server no longer has (served as a hole).
    missing: set[int] = field(default_factory=set)

    def stored(self, after: int) -> list[Chunk]:
        out = []
        seq = 0
        for c in self.chunks:
            seq = c.seq_id if c.seq_id is not None else seq + 1
            if seq > after and seq not in self.missing:
                out.append(c)
        return out

    @property
    def last_seq(self) -> int:
        return seq_of(self.chunks, len(self.chunks) - 1)


class MemoryStream:
    """A stream of chunks; `close()` from another thread ends it like a closed socket."""

    def __init__(self, chunks: list[Chunk], cut: int | None, finished: bool) -> None:
        self._chunks = chunks
        self._cut = cut
        self._finished = finished
        self.closed = threading.Event()
        self._it = self._gen()

    def _gen(self) -> Iterator[Chunk]:
        for i, chunk in enumerate(self._chunks):
            if self.closed.is_set() or (self._cut is not None and i >= self._cut):
                raise StreamInterrupted("the test cut the stream")
            yield chunk
        if not self._finished:
            raise StreamInterrupted("the stream ended before the server finished it")

    def __iter__(self) -> Iterator[Chunk]:
        return self._it

    def __next__(self) -> Chunk:
        return next(self._it)

    def close(self) -> None:
        self.closed.set()


class Failing:
    """A stream whose first read raises `exc` (the SDK raises a refused POST's error then)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        raise self.exc

    def close(self) -> None:
        return None


class MemoryBackend:
    """Serves `runs`; `cuts` are the chunk counts after which the next streams break."""

    base_url = "memory://"

    def __init__(self, *runs: MemoryRun) -> None:
        self.reattaches_otid = False
        self.runs = {r.id: r for r in runs}
        self.cuts: list[int | None] = []
        self.resumes: list[tuple[str, int]] = []
        self.violations: list[str] = []
        self.gets = 0
        self.down = False  # nothing listens: every call is Unreachable
        #: Seqs the next stream leaves out (a hole that a re-read fills).
        self.drop_once: set[int] = set()
        #: The next resumes answer 429 with these Retry-After values (seconds or None).
        self.rate_limits: list[float | None] = []
        #: What the next sends do, in order: an exception raised when the stream is read (a
        #: POST that broke before any frame, a busy 409), or the id of the run it started.
        self.sends: list[BaseException | str] = []
        self.sent: list[dict[str, Any]] = []  # every send: agent, conversation, otid, messages
        #: otid -> run id: what a conversation resume by otid finds (and a re-sent otid
        #: re-attaches to, when `reattaches_otid`).
        self.otids: dict[str, str] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        self.otid_resumes: list[tuple[str, str | None]] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}  # run id -> its stored messages

    def _check(self) -> None:
        if self.down:
            raise Unreachable(f"cannot reach the Letta server at {self.base_url}")

    def _run(self, run_id: str) -> MemoryRun:
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"run {run_id} was not found on {self.base_url}")
        return run

    # ---- streams ---------------------------------------------------------------------------
    def resume(
        self,
        run_id: str,
        starting_after: int = 0,
        *,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> MemoryStream:
        self._check()
        if self.rate_limits:
            raise RateLimited("429 from the test", retry_after=self.rate_limits.pop(0))
        run = self._run(run_id)
        self.resumes.append((run_id, starting_after))
        if starting_after >= run.last_seq:
            self.violations.append(f"resume of {run_id} at {starting_after} >= {run.last_seq}")
        cut = self.cuts.pop(0) if self.cuts else None
        chunks = run.stored(starting_after)
        if self.drop_once:
            drop, self.drop_once = self.drop_once, set()
            chunks = [c for c in chunks if c.seq_id not in drop]
        return MemoryStream(chunks, cut, finished=True)

    def start(
        self,
        agent_id: str,
        messages: list[dict[str, Any]],
        *,
        otid: str,
        conversation_id: str | None = None,
        background: bool = True,
        stream_tokens: bool = True,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> MemoryStream | Failing:
        self._check()
        self.sent.append(
            {"agent": agent_id, "conversation": conversation_id, "otid": otid, "messages": messages}
        )
        if self.reattaches_otid and otid in self.otids:  # a re-sent otid: its run from seq 1
            return MemoryStream(self._run(self.otids[otid]).stored(0), None, finished=True)
        if not self.sends:
            raise NotImplementedError("MemoryBackend serves stored runs only (script .sends)")
        outcome = self.sends.pop(0)
        if isinstance(outcome, BaseException):
            return Failing(outcome)
        self.otids[otid] = outcome
        cut = self.cuts.pop(0) if self.cuts else None
        return MemoryStream(self._run(outcome).stored(0), cut, finished=True)

    def resume_conversation(
        self,
        conversation_id: str,
        *,
        otid: str | None = None,
        run_id: str | None = None,
        starting_after: int = 0,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> MemoryStream | Failing:
        self._check()
        self.otid_resumes.append((conversation_id, otid))
        rid = run_id or (self.otids.get(otid) if otid else None)
        if rid is None:
            return Failing(NotFound(f"no run of conversation {conversation_id} has otid {otid}"))
        return self.resume(rid, starting_after)

    def approve(
        self,
        agent_id: str,
        approvals: list[dict[str, Any]],
        *,
        otid: str,
        conversation_id: str | None = None,
    ) -> MemoryStream | Failing:
        return self.start(agent_id, [{"type": "approval", "approvals": approvals}], otid=otid,
                          conversation_id=conversation_id)  # fmt: skip

    # ---- REST ------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any]:
        self._check()
        self.gets += 1
        run = self._run(run_id)
        return {
            "id": run.id,
            "agent_id": AGENT,
            "status": run.status,
            "stop_reason": run.stop_reason,
            "background": True,
            "created_at": "2026-11-29T14:08:33Z",
            "completed_at": "2026-11-29T14:08:43",
            "total_duration_ns": run.total_duration_ns,
        }

    def health(self) -> dict[str, Any]:
        self._check()
        return {"status": "ok"}

    def list_agents(self, *, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [{"id": AGENT, "name": "memory agent", "model": "fake", "created_at": None}]

    def resolve_agent(self, name_or_id: str) -> dict[str, Any]:
        return self.list_agents()[0]

    def create_agent(self, name: str, model: str = "letta_nb/demo", **kw: Any) -> dict[str, Any]:
        return self.list_agents()[0]

    def pending_approval(
        self, agent_id: str, conversation_id: str | None = None
    ) -> list[dict[str, Any]]:
        return []

    def cancel(self, agent_id: str, run_ids: list[str] | None) -> dict[str, str]:
        return dict.fromkeys(run_ids or [], "cancelled")

    def list_runs(
        self,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        statuses: list[str] | None = None,
        limit: int = 100,
        order: str = "desc",
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return [self.get_run(rid) for rid in self.runs][:limit]

    # ---- conversations ---------------------------------------------------------------------
    def create_conversation(self, agent_id: str, *, summary: str | None = None) -> dict[str, Any]:
        self._check()
        cid = f"conv-{len(self.conversations):08d}-0000-4000-8000-000000000000"
        row = {"id": cid, "agent_id": agent_id, "summary": summary, "created_at": None,
               "updated_at": None, "last_message_at": None}  # fmt: skip
        self.conversations[cid] = row
        return dict(row)

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        self._check()
        if conversation_id not in self.conversations:
            raise NotFound(f"conversation '{conversation_id}' was not found on {self.base_url}")
        return dict(self.conversations[conversation_id])

    def list_conversations(
        self,
        agent_id: str | None = None,
        *,
        summary_search: str | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]:
        rows = [
            dict(c)
            for c in reversed(self.conversations.values())
            if (agent_id is None or c["agent_id"] == agent_id)
            and (not summary_search or summary_search.lower() in (c["summary"] or "").lower())
        ]
        return rows[:limit]

    def delete_conversation(self, conversation_id: str) -> None:
        self.get_conversation(conversation_id)
        del self.conversations[conversation_id]

    def fork_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, Any]:
        return self.create_conversation(agent_id or AGENT)

    def cancel_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, str]:
        return {}

    def conversation_messages(
        self, conversation_id: str, *, limit: int = 100, order: Literal["asc", "desc"] = "asc"
    ) -> list[dict[str, Any]]:
        return []

    def run_usage(self, run_id: str) -> dict[str, Any]:
        return {}

    def run_messages(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        return list(self.messages.get(run_id, []))

    def run_steps(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        return None


def _conforms(backend: MemoryBackend) -> LettaBackend:
    return backend  # mypy: the fake is what the run chain and the session use
