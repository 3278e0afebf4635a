"""A follower stand-in with the attributes of docs/architecture.md's Follower contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from letta_nb.core.approval import ApprovalState
from letta_nb.core.chunks import Chunk
from letta_nb.core.transcript import Transcript


class FakeFollower:
    def __init__(self, agent_id: str = "agent-1", run_id: str = "run-1") -> None:
        self.agent_id = agent_id
        self.transcript = Transcript()
        self.status = "running"
        self.runs = [run_id]
        self.frames = 0
        self.frames_per_s = 0.0
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.approval: ApprovalState | None = None
        self.warning: str | None = None
        self.error: str | None = None
        self.calls: list[tuple[Any, ...]] = []
        self._listeners: list[Callable[[Any], None]] = []
        self._msg = 0

    @property
    def run_id(self) -> str:
        return self.runs[-1]

    @property
    def last_seq(self) -> int:
        return self.transcript.last_seq(self.run_id)

    def add_listener(self, fn: Callable[[Any], None]) -> None:
        self._listeners.append(fn)

    def changed(self) -> None:
        for fn in list(self._listeners):
            fn(self)

    # ---- feeding ---------------------------------------------------------------------------
    def feed(self, message_type: str, notify: bool = True, **data: Any) -> None:
        seq = self.last_seq + 1
        body = {"message_type": message_type, "run_id": self.run_id, "seq_id": seq, **data}
        self.transcript.apply(Chunk(message_type, body, self.run_id, seq), self.run_id)
        self.frames += 1
        if notify:
            self.changed()

    def say(self, text: str, msg_id: str = "m1") -> None:
        self.feed("assistant_message", id=msg_id, content=text)

    def stop(self, reason: str = "end_turn", status: str = "completed") -> None:
        self.feed("stop_reason", stop_reason=reason, notify=False)
        self.status = status
        self.ended_at = time.time()
        self.changed()

    def request_approval(self, tool_call_id: str = "call-1") -> None:
        self.feed(
            "approval_request_message",
            id="ap1",
            tool_call={
                "name": "write_report",
                "arguments": '{"title": "Q3"}',
                "tool_call_id": tool_call_id,
            },
            notify=False,
        )
        self.feed("stop_reason", stop_reason="requires_approval", notify=False)
        self.status = "requires_approval"
        self.approval = ApprovalState(self.run_id, self.transcript.pending_tool_calls())
        self.changed()

    # ---- contract methods ------------------------------------------------------------------
    def answer(self, approve: bool, reason: str | None = None) -> None:
        self.calls.append(("answer", approve, reason))
        assert self.approval is not None
        self.approval.begin(approve, reason)
        new_run = f"run-{len(self.runs) + 1}"
        self.approval.succeeded(new_run)
        self.runs.append(new_run)
        self.status = "running"

    def cancel(self) -> str:
        self.calls.append(("cancel",))
        return "cancelled"

    def detach(self) -> None:
        self.calls.append(("detach",))
        self.status = "detached"
        self.changed()

    def wait(self, timeout: float | None = None) -> str:
        return self.status


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
