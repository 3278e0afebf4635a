"""A run chain stand-in that implements `letta_nb._protocols.RunChain` (mypy checks it: this
file is in `[tool.mypy] files`), a fake clock, and a recording comm that captures what a view
sends to the browser, so tests read the wire the way the browser module does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from letta_nb._protocols import Listener, RunChain
from letta_nb.batch import Batch, Runner
from letta_nb.batch.state import ItemState
from letta_nb.core.approval import ApprovalState
from letta_nb.core.chunks import Chunk
from letta_nb.core.cursor import CursorStore
from letta_nb.core.errors import ApprovalError
from letta_nb.core.transcript import Transcript
from letta_nb.run import Follower


class FakeChain:
    def __init__(self, agent_id: str = "agent-1", run_id: str = "run-1") -> None:
        self.agent_id = agent_id
        self.conversation_id: str | None = None
        self.busy_run: str | None = None
        self.transcript = Transcript()
        self.status = "running"
        self._runs = [run_id]
        self.approval: ApprovalState | None = None
        self.warning: str | None = None
        self.error: str | None = None
        self.active = 0.0
        self.calls: list[tuple[Any, ...]] = []
        self._listeners: list[Listener] = []
        self.fail_answer: str | None = None

    # ---- RunChain ------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        return self._runs[-1]

    @property
    def runs(self) -> list[str]:
        return list(self._runs)

    @property
    def last_seq(self) -> int:
        rid = self.run_id
        return self.transcript.last_seq(rid) if rid else 0

    @property
    def active_seconds(self) -> float:
        return self.active

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def answer(self, approve: bool, reason: str | None = None) -> None:
        self.calls.append(("answer", approve, reason))
        if self.fail_answer:
            raise ApprovalError(self.fail_answer)
        assert self.approval is not None
        self.approval.begin(approve, reason)
        self.approval.succeeded(f"run-{len(self._runs) + 1}")
        self._runs.append(f"run-{len(self._runs) + 1}")
        self.status = "running"
        self.changed()

    def cancel(self) -> str:
        self.calls.append(("cancel",))
        return "cancelled"

    def detach(self) -> None:
        self.calls.append(("detach",))
        self.status = "detached"
        self.changed()

    # ---- feeding -------------------------------------------------------------------------
    def changed(self) -> None:
        for fn in list(self._listeners):
            fn(self)

    def feed(self, message_type: str, notify: bool = True, **data: Any) -> None:
        rid = self.run_id
        seq = self.last_seq + 1
        body = {"message_type": message_type, "run_id": rid, "seq_id": seq, **data}
        self.transcript.apply(Chunk(message_type, body, rid, seq), rid)
        if notify:
            self.changed()

    def say(self, text: str, msg_id: str = "m1") -> None:
        self.feed("assistant_message", id=msg_id, content=text)

    def think(self, text: str, msg_id: str = "r1") -> None:
        self.feed("reasoning_message", id=msg_id, reasoning=text)

    def stop(self, reason: str = "end_turn", status: str = "completed") -> None:
        self.feed("stop_reason", stop_reason=reason, notify=False)
        self.feed("usage_statistics", total_tokens=42, notify=False)
        self.status = status
        self.changed()

    def request_approval(self, arguments: str = '{"title": "Q3"}', call: str = "call-1") -> None:
        self.feed(
            "approval_request_message",
            id="ap1",
            tool_call={"name": "write_report", "arguments": arguments, "tool_call_id": call},
            notify=False,
        )
        self.feed("stop_reason", stop_reason="requires_approval", notify=False)
        self.status = "requires_approval"
        rid = self.run_id
        assert rid is not None
        self.approval = ApprovalState(rid, self.transcript.pending_tool_calls())
        self.changed()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Wire:
    """Every comm message the widgets sent, as (msg_type, data, buffers)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], list[bytes]]] = []

    def customs(self) -> list[tuple[dict[str, Any], list[bytes]]]:
        return [
            (d["content"], b)
            for t, d, b in self.messages
            if t == "comm_msg" and d.get("method") == "custom"
        ]

    def bytes(self) -> int:
        return sum(len(repr(d)) + sum(len(x) for x in b) for _, d, b in self.messages)


@contextmanager
def recording_comm() -> Iterator[Wire]:
    """Install a comm that records what the kernel would send (no kernel needed)."""
    import comm
    from comm.base_comm import BaseComm

    wire = Wire()

    class RecordingComm(BaseComm):
        def publish_msg(
            self,
            msg_type: str,
            data: Any = None,
            metadata: Any = None,
            buffers: Any = None,
            **keys: Any,
        ) -> None:
            wire.messages.append((msg_type, dict(data or {}), [bytes(b) for b in buffers or ()]))

    original = comm.create_comm

    def create(*args: Any, **kwargs: Any) -> BaseComm:
        return RecordingComm(*args, **kwargs)

    comm.create_comm = create
    try:
        yield wire
    finally:
        comm.create_comm = original


#: mypy checks the fake against the real protocol (it cannot drift from the follower).
_typed: RunChain = FakeChain()


def _sender_conforms(sender: NoSender) -> Any:
    from letta_nb.batch.sender import ItemSender

    typed: ItemSender = sender
    return typed


# ---- a batch whose items the test moves by hand (no server, no runner thread) ----------------
class NoSender:
    """An `ItemSender` that never sends: view tests move the items themselves."""

    backend: Any = None
    agent_id = "agent-1"

    def __init__(self) -> None:
        self.cancelled: list[list[str]] = []

    def prepare(self, item: ItemState, *, again: bool) -> None:
        return None

    def chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        raise AssertionError("a view test sends nothing")

    def send(self, chain: Follower, item: ItemState, message: str, otid: str) -> None:
        raise AssertionError("a view test sends nothing")

    def cancel(self, items: list[ItemState]) -> dict[str, str]:
        run_ids = [i.run_id for i in items if i.run_id is not None]
        self.cancelled.append(run_ids)
        return dict.fromkeys(run_ids, "cancelled")


def make_batch(store: Path, n: int, labels: list[Any] | None = None) -> Batch:
    """A `Batch` of `n` pending items over `store` (its runner thread never starts)."""
    import pandas as pd

    items = [ItemState(i, f"digest-{i}") for i in range(n)]
    runner = Runner(
        key="batch:test",
        items=items,
        messages=[f"message {i}" for i in range(n)],
        sender=NoSender(),
        store=CursorStore(store),
        concurrency=4,
    )
    for item in items:
        runner.queue.push(item.pos)  # owed: the batch is running until the test ends items
    index = pd.Index(labels if labels is not None else list(range(n)))
    agent = {"id": "agent-1", "name": "demo-analyst"}
    return Batch(None, key="batch:test", agent=agent, index=index, template=None, runner=runner)  # type: ignore[arg-type]


#: The path each status takes from `pending` in the item lifecycle.
_PATH = {
    "starting": ["starting"],
    "running": ["starting", "running"],
    "requires_approval": ["starting", "running", "requires_approval"],
    "completed": ["starting", "running", "completed"],
    "failed": ["starting", "running", "failed"],
    "cancelled": ["cancelled"],
}


def step(batch: Batch, pos: int, status: str, **fields: Any) -> None:
    """Move item `pos` to `status` (through the lifecycle) as the runner would, and tell."""
    runner = batch.runner
    item = runner.items[pos]
    runner.queue.discard(pos)
    path = _PATH[status]
    for s in path[path.index(item.status) + 1 :] if item.status in path else path:
        item.move(s)
    for name, value in fields.items():
        setattr(item, name, value)
    if status in ("starting", "running"):
        runner._flight.add(pos)
    else:
        runner._flight.discard(pos)
    runner._touch(item)
    runner._publish()
