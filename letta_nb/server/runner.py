"""The run engine: drives a brain's turn generator and turns its events into Letta frames.

Each run is one asyncio task on the server loop. It assigns message ids, otids and step ids,
executes tools off the loop, persists messages and steps, and writes frames through a sink:
background runs number frames and append them to the SQLite frame log; foreground streams push
unnumbered frames to their one connection.

Background frames flow: ``_queue`` collects them per run; ``flush`` (once per loop turn) hands
the batch to the ``FrameWriter`` thread, which commits it; only then, back on the loop, the
frames join the run's in-memory window of committed frames (``LiveRun.recent``) and the run's
readers are woken once. Live readers copy straight from that window (one join per batch),
readers further behind read SQLite. So a frame is always stored before it is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from letta_nb.server import schemas
from letta_nb.server.brains.base import (
    WORKDIR_PARAM,
    Assistant,
    Brain,
    Fail,
    Reasoning,
    Sleep,
    ToolCall,
    ToolResult,
    Turn,
    TurnContext,
    accepts_workdir,
)
from letta_nb.server.ids import derive_otid, new_id, new_tool_call_id
from letta_nb.server.storage import FrameBatch, FrameWriter, Page, Store
from letta_nb.server.turns import Decision, TurnRequest

DONE = b"data: [DONE]\n\n"
CANCELLED = b'data: {"message_type": "stop_reason", "stop_reason": "cancelled"}\n\n'
PENDING_MESSAGE = (
    "CONFLICT: Cannot send a new message: The agent is waiting for approval on a tool call. "
    "Please approve or deny the pending request before continuing."
)
SLEEP_SLICE = 0.05
_LAST_50 = Page("desc", None, None, 50)
YIELD_EVERY = 1024
FLUSH_AT = 4096  # frames a run buffers before it flushes without waiting for the loop turn
RECENT_KEEP = 16384  # committed frames a live run keeps in memory for its live readers
ARG_CHUNK = 8


_encode_str = json.encoder.encode_basestring


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def render(frame: dict[str, Any], seq: int | None, *, event: str | None = None) -> bytes:
    """One SSE frame. ``seq`` is injected only where the frame has a ``seq_id`` key."""
    if "seq_id" in frame:
        frame["seq_id"] = seq
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {dumps(frame)}\n\n".encode()


def pieces(text: str) -> int:
    """Deterministic token count: whitespace-separated pieces."""
    return len(text.split())


@dataclass(slots=True)
class LiveRun:
    """In-memory state of a run this process is executing."""

    id: str
    agent_id: str
    background: bool
    include_pings: bool
    stream_tokens: bool
    max_steps: int
    started: float = field(default_factory=time.monotonic)
    ttft_ns: int | None = None  # time to the first frame of model output (not the ping)
    seq: int = 0
    committed: int = 0  # highest seq known committed (readers never get past it)
    unflushed: list[bytes] = field(default_factory=list)  # queued, not yet handed to the writer
    unflushed_first: int = 0
    recent: list[bytes] = field(default_factory=list)  # committed frames recent_base..committed
    recent_base: int = 1
    write_error: BaseException | None = None
    done: bool = False
    cancel_requested: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    queue: asyncio.Queue[bytes | None] | None = None  # foreground connection
    steps: list[dict[str, Any]] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    stop_reason: str | None = None
    task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def tail_after(self, seq: int) -> bytes | None:
        """Committed frames after ``seq`` from memory, or None if the window does not hold them."""
        if not self.recent_base <= seq + 1 <= self.committed:
            return None
        return b"".join(self.recent[seq + 1 - self.recent_base :])

    def committed_frames(self, first: int, frames: list[bytes]) -> None:
        """Record a committed batch (called on the loop, in commit order)."""
        if first != self.committed + 1:  # not contiguous (never expected): restart the window
            self.recent = []
        self.recent.extend(frames)
        if len(self.recent) > 2 * RECENT_KEEP:
            del self.recent[: len(self.recent) - RECENT_KEEP]
        self.committed = first + len(frames) - 1
        self.recent_base = self.committed - len(self.recent) + 1


@dataclass(slots=True)
class _Open:
    """The message being streamed right now (consecutive deltas of one kind)."""

    kind: str
    message_id: str
    otid: str
    text: list[str] = field(default_factory=list)
    prefix_date: str = ""
    prefix: str = ""
    suffix: str = ""
    end: str = ""


class RunCancelled(Exception):
    """Raised inside a run's driver when a cancel request is seen."""


class Engine:
    """Owns live runs, the frame batcher and the brain registry."""

    def __init__(self, store: Store, brains: Mapping[str, Brain], workdir_root: Path) -> None:
        self.store = store
        self.brains = brains
        self.workdir_root = workdir_root
        self.live: dict[str, LiveRun] = {}
        self._touched: list[LiveRun] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.writer = FrameWriter(store.path, store.write_lock, self._on_commit)

    def close(self) -> None:
        """Hand over what is queued and wait for the writer to commit it (shutdown)."""
        self.flush()
        self.writer.close()

    # -- frame log --------------------------------------------------------------------------
    def emit(
        self, run: LiveRun, frame: dict[str, Any] | bytes, *, event: str | None = None
    ) -> None:
        if run.background:
            run.seq += 1
            data = frame if isinstance(frame, bytes) else render(frame, run.seq, event=event)
            self._queue(run, data)
        elif run.queue is not None:
            if run.ttft_ns is None and not (
                isinstance(frame, dict) and frame.get("message_type") == "ping"
            ):
                run.ttft_ns = int((time.monotonic() - run.started) * 1e9)
            data = frame if isinstance(frame, bytes) else render(frame, None, event=event)
            run.queue.put_nowait(data)

    def _queue(self, run: LiveRun, data: bytes) -> None:
        """Buffer a numbered frame (``run.seq``); ``flush`` sends it to the writer."""
        if run.ttft_ns is None and (run.seq > 1 or not run.include_pings):  # seq 1: the ping
            run.ttft_ns = int((time.monotonic() - run.started) * 1e9)
        buf = run.unflushed
        if not buf:
            run.unflushed_first = run.seq
            self._touched.append(run)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self.flush)
        buf.append(data)
        if len(buf) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Hand every run's buffered frames to the writer thread as one batch."""
        self._flush_scheduled = False
        if not self._touched:
            return
        batch: FrameBatch = [(run, run.unflushed_first, run.unflushed) for run in self._touched]
        for run in self._touched:
            run.unflushed = []
        self._touched = []
        self.writer.submit(batch)

    def _on_commit(self, batch: FrameBatch, error: BaseException | None) -> None:
        """Writer thread: a batch is durable (or failed); continue on the loop."""
        self._loop.call_soon_threadsafe(self._committed, batch, error)

    def _committed(self, batch: FrameBatch, error: BaseException | None) -> None:
        """Loop: committed frames become visible to live readers, who are woken once."""
        woken: dict[str, LiveRun] = {}
        for run, first, frames in batch:
            if error is not None:
                run.write_error = error
            else:
                run.committed_frames(first, list(frames))
            woken[run.id] = run
        for run in woken.values():
            run.notify()

    async def _drain(self, run: LiveRun) -> None:
        """Wait until every frame of ``run`` emitted so far is committed."""
        self.flush()
        while run.committed < run.seq and run.write_error is None:
            await run.changed.wait()
        if run.write_error is not None:
            raise RuntimeError(f"frame log write failed: {run.write_error!r}")

    # -- starting and cancelling ------------------------------------------------------------
    def start(
        self,
        agent: dict[str, Any],
        turn: TurnRequest,
        *,
        background: bool,
        streaming: bool,
        include_pings: bool,
        stream_tokens: bool,
        max_steps: int,
        otid_key: str | None,
        failure: tuple[str, str, str] | None = None,
    ) -> LiveRun:
        """Create the run row, mark it running and schedule its driver task."""
        run = LiveRun(
            id=new_id("run"),
            agent_id=agent["id"],
            background=background,
            include_pings=include_pings and streaming,
            stream_tokens=stream_tokens and streaming,
            max_steps=max_steps,
        )
        if streaming and not background:
            run.queue = asyncio.Queue()
        self.store.insert_run(run.id, agent["id"], background, otid_key)
        self.store.set_run_status(run.id, "running")
        self.live[run.id] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run, agent, turn, failure))
        return run

    async def cancel(self, run_id: str, wait: float = 5.0) -> str:
        """Cancel one run; idempotent. Returns Letta's per-run answer ("cancelled"/"failed")."""
        run = self.live.get(run_id)
        if run is not None:
            run.cancel_requested = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.finished.wait(), wait)
            return "cancelled"
        row = self.store.get_run(run_id)
        if row is None:
            return "failed"
        if row["stop_reason"] == "requires_approval":
            agent = self.store.get_agent(row["agent_id"])
            pending = agent["pending"] if agent else None
            if agent and pending and pending.get("run_id") == run_id:
                self._deny_on_cancel(agent, pending, run_id)
            self.store.finish_run(
                run_id,
                status="cancelled",
                stop_reason="cancelled",
                last_seq=row["last_seq"],
                usage=row["usage"],
                metadata=row["metadata"],
                total_duration_ns=row["total_duration_ns"],
            )
        return "cancelled"

    def _deny_on_cancel(self, agent: dict[str, Any], pending: dict[str, Any], run_id: str) -> None:
        """Clear a pending approval the way an explicit denial would, so the agent stays usable."""
        reason = "The run waiting for this approval was cancelled."
        decision = Decision(
            tool_call_id=pending["tool_call_id"], kind="approval", approve=False, reason=reason
        )
        self._persist_approval_response(agent["id"], run_id, [decision], pending)
        self._persist_tool_return(
            agent["id"],
            run_id,
            new_id("step"),
            pending["name"],
            pending["tool_call_id"],
            "error",
            f"Error: request to call tool denied. User reason: {reason}",
        )
        self.store.update_agent(agent["id"], pending=None)

    # -- the driver -------------------------------------------------------------------------
    async def _drive(
        self,
        run: LiveRun,
        agent: dict[str, Any],
        turn: TurnRequest,
        failure: tuple[str, str, str] | None,
    ) -> None:
        stop = "end_turn"
        error: dict[str, Any] | None = None
        try:
            if run.include_pings:
                ping = schemas.envelope(
                    new_id("ping"), "ping", otid=None, step_id=None, run_id=run.id
                )
                self.emit(run, ping)
            if failure is not None:
                error_type, message, detail = failure
                stop, error = "error", schemas.error_message(run.id, error_type, message, detail)
            else:
                brain = self.brains[agent["model"]]
                ctx = self._context(agent, run)
                step = self._new_step(run)
                if turn.is_approval:
                    result, step = await self._apply_decisions(run, agent, turn, step)
                    gen = brain.resume_after_approval(ctx, result)
                else:
                    text = turn.user_text or ""
                    self._persist(
                        agent["id"],
                        run.id,
                        {
                            **schemas.envelope(
                                new_id("message"),
                                "user_message",
                                otid=turn.otids[0] if turn.otids else str(uuid.uuid4()),
                                step_id=step["id"],
                                run_id=run.id,
                            ),
                            "content": text,
                        },
                    )
                    step["prompt_tokens"] += max(1, pieces(text))
                    gen = brain.respond(ctx, text)
                stop, error = await self._play(run, agent, brain, gen, step)
        except RunCancelled:
            stop, error = "cancelled", None
        except Exception as exc:  # a brain or tool bug must end the run, never hang readers
            stop = "error"
            error = schemas.error_message(
                run.id, "internal_error", "An unknown error occurred with the run.", repr(exc)
            )
        await self._finish(run, agent, stop, error)

    def _context(self, agent: dict[str, Any], run: LiveRun) -> TurnContext:
        workdir = self.workdir_root / agent["id"]
        workdir.mkdir(parents=True, exist_ok=True)
        history = []
        for m in self.store.list_messages(_LAST_50, agent_id=agent["id"]):
            if m["message_type"] in ("user_message", "assistant_message"):
                role = "user" if m["message_type"] == "user_message" else "assistant"
                history.append(
                    {
                        "role": role,
                        "content": m.get("content", ""),
                        "message_type": m["message_type"],
                    }
                )
        history.reverse()
        return TurnContext(
            agent_id=agent["id"],
            agent_name=agent["name"],
            run_id=run.id,
            workdir=workdir,
            history=tuple(history),
        )

    def _new_step(self, run: LiveRun) -> dict[str, Any]:
        step = {
            "id": new_id("step"),
            "run_id": run.id,
            "agent_id": run.agent_id,
            "completion_tokens": 0,
            "prompt_tokens": 0,
            "stop_reason": None,
        }
        run.steps.append(step)
        return step

    def _check_cancel(self, run: LiveRun) -> None:
        if run.cancel_requested:
            raise RunCancelled

    async def _play(
        self, run: LiveRun, agent: dict[str, Any], brain: Brain, gen: Turn, step: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """Run the brain generator to its end; returns (stop_reason, error_message or None)."""
        gated = self._gated(agent, brain)
        open_msg: _Open | None = None
        send: ToolResult | None = None
        count = 0
        try:
            while True:
                self._check_cancel(run)
                try:
                    event = gen.send(send)
                except StopIteration:
                    self._close(run, open_msg, step)
                    return "end_turn", None
                send = None
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if isinstance(event, Assistant | Reasoning):
                    kind = (
                        "assistant_message" if isinstance(event, Assistant) else "reasoning_message"
                    )
                    if open_msg is None or open_msg.kind != kind:
                        self._close(run, open_msg, step)
                        mid = new_id("message")
                        open_msg = _Open(kind, mid, derive_otid(mid))
                    open_msg.text.append(event.text)
                    if run.stream_tokens:
                        self._emit_text_delta(run, open_msg, step, event.text)
                    continue
                if isinstance(event, Sleep):
                    # A pause inside a message (e.g. /long N DELAY_MS) must not split it:
                    # the next delta continues the same message id.
                    await self._sleep(run, event.seconds)
                    continue
                self._close(run, open_msg, step)
                open_msg = None
                if isinstance(event, Fail):
                    return "llm_api_error", schemas.error_message(
                        run.id, event.error_type, event.message, event.message
                    )
                elif isinstance(event, ToolCall):
                    if event.name in gated:
                        self._request_approval(run, agent, event, step)
                        return "requires_approval", None
                    if len(run.steps) >= run.max_steps:
                        return "max_steps", None
                    send = await self._call_tool(run, agent, brain, event, step)
                    step = self._new_step(run)
                    step["prompt_tokens"] += max(1, pieces(send.tool_return))
                else:
                    raise TypeError(f"unknown brain event {event!r}")
        finally:
            gen.close()

    def _gated(self, agent: dict[str, Any], brain: Brain) -> set[str]:
        """Tools needing approval: the brain's, plus tool rules and toggles on the agent."""
        cfg = agent["config"]
        gated = set(brain.approval_required)
        for rule in cfg.get("tool_rules") or []:
            if rule.get("type") == "requires_approval":
                gated.add(rule.get("tool_name"))
        for tool_id in cfg.get("tool_ids") or []:
            tool = self.store.get_tool(tool_id)
            if tool and tool.get("default_requires_approval"):
                gated.add(tool["name"])
        for name, required in (cfg.get("approval_overrides") or {}).items():
            if required:
                gated.add(name)
            else:
                gated.discard(name)
        return gated

    async def _sleep(self, run: LiveRun, seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            self._check_cancel(run)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(SLEEP_SLICE, left))

    # -- frames of each message kind --------------------------------------------------------
    def _text_frame(self, run: LiveRun, msg: _Open, step: dict[str, Any], text: str) -> dict:
        frame = schemas.envelope(
            msg.message_id, msg.kind, otid=msg.otid, step_id=step["id"], run_id=run.id
        )
        if msg.kind == "assistant_message":
            frame["content"] = text
        else:
            frame["source"] = "reasoner_model"
            frame["reasoning"] = text
            frame["signature"] = None
        return frame

    def _emit_text_delta(self, run: LiveRun, msg: _Open, step: dict[str, Any], text: str) -> None:
        """Hot path: render a token delta by string assembly (same bytes as ``render``)."""
        if not run.background:
            self.emit(run, self._text_frame(run, msg, step, text))
            return
        date = schemas.message_date()
        if msg.prefix_date != date:
            field_name = "content" if msg.kind == "assistant_message" else None
            msg.prefix_date = date
            msg.prefix = (
                f'data: {{"id":"{msg.message_id}","date":"{date}","name":null,'
                f'"message_type":"{msg.kind}","otid":"{msg.otid}","sender_id":null,'
                f'"step_id":"{step["id"]}","is_err":null,"seq_id":'
            )
            msg.suffix = (
                f',"run_id":"{run.id}","content":'
                if field_name
                else f',"run_id":"{run.id}","source":"reasoner_model","reasoning":'
            )
            msg.end = "}\n\n" if field_name else ',"signature":null}\n\n'
        run.seq += 1
        data = f"{msg.prefix}{run.seq}{msg.suffix}{_encode_str(text)}{msg.end}".encode()
        self._queue(run, data)

    def _close(self, run: LiveRun, msg: _Open | None, step: dict[str, Any]) -> None:
        """End the open message: persist it whole (and stream it whole without stream_tokens)."""
        if msg is None:
            return
        full = "".join(msg.text)
        step["completion_tokens"] += pieces(full)
        frame = self._text_frame(run, msg, step, full)
        if not run.stream_tokens:
            self.emit(run, dict(frame))
        self._persist(run.agent_id, run.id, frame)

    def _tool_call_frames(
        self,
        run: LiveRun,
        kind: str,
        mid: str,
        otid: str,
        step: dict[str, Any],
        name: str,
        call_id: str,
        arguments: str,
    ) -> None:
        """Stream a call as Letta does: a name delta, then argument fragments (or one frame)."""

        def frame(call: dict[str, Any], calls: Any) -> dict[str, Any]:
            f = schemas.envelope(mid, kind, otid=otid, step_id=step["id"], run_id=run.id)
            f["tool_call"] = call
            f["tool_calls"] = calls
            return f

        full = {"name": name, "arguments": arguments, "tool_call_id": call_id}
        if not run.stream_tokens:
            self.emit(run, frame(dict(full), [dict(full)]))
            return
        keep_nulls = kind == "approval_request_message"
        first = (
            {"name": name, "arguments": None, "tool_call_id": call_id}
            if keep_nulls
            else {"name": name, "tool_call_id": call_id}
        )
        self.emit(run, frame(first, dict(first)))
        for i in range(0, len(arguments), ARG_CHUNK):
            part = arguments[i : i + ARG_CHUNK]
            delta = (
                {"name": None, "arguments": part, "tool_call_id": call_id}
                if keep_nulls
                else {"arguments": part, "tool_call_id": call_id}
            )
            self.emit(run, frame(delta, dict(delta)))

    def _request_approval(
        self, run: LiveRun, agent: dict[str, Any], call: ToolCall, step: dict[str, Any]
    ) -> None:
        mid = new_id("message")
        call_id = new_tool_call_id()
        arguments = json.dumps(call.arguments)
        step["completion_tokens"] += max(1, pieces(arguments))
        self._tool_call_frames(
            run, "approval_request_message", mid, mid, step, call.name, call_id, arguments
        )
        full = {"name": call.name, "arguments": arguments, "tool_call_id": call_id}
        message = {
            **schemas.envelope(
                mid, "approval_request_message", otid=mid, step_id=step["id"], run_id=run.id
            ),
            "tool_call": dict(full),
            "tool_calls": [dict(full)],
        }
        self._persist(agent["id"], run.id, message)
        self.store.update_agent(
            agent["id"],
            pending={
                "message": message,
                "tool_call_id": call_id,
                "name": call.name,
                "arguments": call.arguments,
                "step_id": step["id"],
                "run_id": run.id,
            },
        )

    async def _call_tool(
        self,
        run: LiveRun,
        agent: dict[str, Any],
        brain: Brain,
        call: ToolCall,
        step: dict[str, Any],
    ) -> ToolResult:
        mid = new_id("message")
        call_id = new_tool_call_id()
        arguments = json.dumps(call.arguments)
        step["completion_tokens"] += max(1, pieces(arguments))
        self._tool_call_frames(
            run, "tool_call_message", mid, derive_otid(mid), step, call.name, call_id, arguments
        )
        full = {"name": call.name, "arguments": arguments, "tool_call_id": call_id}
        self._persist(
            agent["id"],
            run.id,
            {
                **schemas.envelope(
                    mid,
                    "tool_call_message",
                    otid=derive_otid(mid),
                    step_id=step["id"],
                    run_id=run.id,
                ),
                "tool_call": dict(full),
                "tool_calls": [dict(full)],
            },
        )
        result = await self._execute(brain, agent, call.name, call.arguments, call_id)
        self._check_cancel(run)
        frame = self._persist_tool_return(
            agent["id"], run.id, step["id"], call.name, call_id, result.status, result.tool_return
        )
        self.emit(run, dict(frame))
        return result

    async def _execute(
        self,
        brain: Brain,
        agent: dict[str, Any],
        name: str,
        arguments: dict[str, Any],
        call_id: str,
    ) -> ToolResult:
        """Run a tool off the event loop; exceptions become an error tool return.

        A tool declaring a ``workdir`` parameter gets the agent's folder here (overriding any
        such argument), so the brain never has to put a server path into visible arguments.
        """
        func = brain.tools.get(name) or self._custom_tool(name)
        if func is None:
            return ToolResult(
                call_id, name, "error", f"Error: tool {name!r} does not exist.", dict(arguments)
            )
        kwargs = dict(arguments)
        if accepts_workdir(func):
            workdir = self.workdir_root / agent["id"]
            workdir.mkdir(parents=True, exist_ok=True)
            kwargs[WORKDIR_PARAM] = str(workdir.resolve())
        try:
            out = await asyncio.to_thread(func, **kwargs)
        except Exception as exc:
            return ToolResult(
                call_id,
                name,
                "error",
                f"Error executing function {name}: {type(exc).__name__}: {exc}",
                dict(arguments),
            )
        return ToolResult(
            call_id, name, "success", out if isinstance(out, str) else dumps(out), dict(arguments)
        )

    def _custom_tool(self, name: str) -> Callable[..., Any] | None:
        """A tool created through ``POST /v1/tools/``: its source defines a function ``name``."""
        tool = self.store.tool_by_name(name)
        if not tool or not tool.get("source_code"):
            return None
        namespace: dict[str, Any] = {}
        exec(compile(tool["source_code"], f"<tool {name}>", "exec"), namespace)
        func = namespace.get(name)
        return func if callable(func) else None

    # -- approvals --------------------------------------------------------------------------
    async def _apply_decisions(
        self, run: LiveRun, agent: dict[str, Any], turn: TurnRequest, step: dict[str, Any]
    ) -> tuple[ToolResult, dict[str, Any]]:
        """Persist the approval response, clear the pending call and produce its tool result."""
        pending = agent["pending"]
        self.store.update_agent(agent["id"], pending=None)
        self._persist_approval_response(agent["id"], run.id, turn.decisions, pending)
        decision = turn.decisions[0]
        name, call_id = pending["name"], pending["tool_call_id"]
        if decision.kind == "tool":
            result = ToolResult(
                call_id,
                name,
                decision.status or "success",
                decision.tool_return or "",
                dict(pending["arguments"]),
            )
            self._persist_tool_return(
                agent["id"], run.id, step["id"], name, call_id, result.status, result.tool_return
            )
        elif decision.approve:
            brain = self.brains[agent["model"]]
            result = await self._execute(brain, agent, name, pending["arguments"], call_id)
            self._check_cancel(run)
            frame = self._persist_tool_return(
                agent["id"],
                run.id,
                pending["step_id"],
                name,
                call_id,
                result.status,
                result.tool_return,
                sandbox=True,
            )
            self.emit(run, dict(frame))
        else:
            text = "Error: request to call tool denied."
            if decision.reason:
                text += f" User reason: {decision.reason}"
            result = ToolResult(call_id, name, "error", text, dict(pending["arguments"]))
            self._persist_tool_return(agent["id"], run.id, step["id"], name, call_id, "error", text)
        step["prompt_tokens"] += max(1, pieces(result.tool_return))
        return result, step

    def _persist_approval_response(
        self, agent_id: str, run_id: str, decisions: list[Decision], pending: dict[str, Any]
    ) -> None:
        approvals: list[dict[str, Any]] = []
        for d in decisions:
            if d.kind == "tool":
                approvals.append(
                    {
                        "type": "tool",
                        "tool_return": d.tool_return,
                        "status": d.status,
                        "tool_call_id": d.tool_call_id,
                        "stdout": None,
                        "stderr": None,
                    }
                )
            else:
                approvals.append(
                    {
                        "type": "approval",
                        "tool_call_id": d.tool_call_id,
                        "approve": d.approve,
                        "reason": d.reason,
                    }
                )
        first = decisions[0]
        single = first.kind == "approval"
        request_id = first.legacy_request_id or first.tool_call_id
        self._persist(
            agent_id,
            run_id,
            {
                **schemas.envelope(
                    new_id("message"),
                    "approval_response_message",
                    otid=None,
                    step_id=None,
                    run_id=run_id,
                ),
                "approvals": approvals,
                "approve": first.approve if single else None,
                "approval_request_id": request_id if single else None,
                "reason": first.reason if single else None,
            },
        )

    def _persist_tool_return(
        self,
        agent_id: str,
        run_id: str,
        step_id: str,
        name: str,
        call_id: str,
        status: str,
        text: str,
        *,
        sandbox: bool = False,
    ) -> dict[str, Any]:
        mid = new_id("message")
        frame = {
            **schemas.envelope(
                mid,
                "tool_return_message",
                otid=derive_otid(mid),
                step_id=step_id,
                run_id=run_id,
                name=name,
            ),
            **schemas.tool_return_payload(call_id, status, text, sandbox=sandbox),
        }
        self._persist(agent_id, run_id, frame)
        return frame

    def _persist(self, agent_id: str, run_id: str, message: dict[str, Any]) -> None:
        self.store.insert_message(agent_id, run_id, message)

    # -- the end of a run -------------------------------------------------------------------
    async def _finish(
        self, run: LiveRun, agent: dict[str, Any], stop: str, error: dict[str, Any] | None
    ) -> None:
        usage = {
            "completion_tokens": sum(s["completion_tokens"] for s in run.steps),
            "prompt_tokens": sum(s["prompt_tokens"] for s in run.steps),
            "step_count": len(run.steps),
        }
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        metadata: dict[str, Any] = {"run_type": "send_message"}
        if stop == "cancelled":
            status = "cancelled"
            self.emit(run, CANCELLED)
            self.emit(run, DONE)
        elif error is not None:
            status = "failed"
            self.emit(run, schemas.stop_reason_frame(stop))
            self.emit(run, dict(error), event="error")
            metadata["error"] = error
            if not run.background:
                self.emit(run, DONE)
        else:
            status = "completed"
            self.emit(run, schemas.stop_reason_frame(stop))
            frame = schemas.usage_frame(usage)
            if not run.stream_tokens:  # recorded: whole-message runs report zero cache tokens
                frame.update(cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0)
            self.emit(run, frame)
            self.emit(run, DONE)
        if run.steps:
            run.steps[-1]["stop_reason"] = stop
        try:
            await self._drain(run)  # the status never says "ended" before the frames are stored
        except RuntimeError as exc:
            status, stop = "failed", "error"
            metadata["error"] = schemas.error_message(run.id, "internal_error", str(exc), None)
        self.store.insert_steps(run.steps)
        self.store.finish_run(
            run.id,
            status=status,
            stop_reason=stop,
            last_seq=run.seq,
            usage=usage,
            metadata=metadata,
            total_duration_ns=int((time.monotonic() - run.started) * 1e9),
            ttft_ns=run.ttft_ns,
        )
        if self.store.get_agent(agent["id"]) is not None:
            self.store.update_agent(agent["id"], last_stop_reason=stop)
        run.stop_reason = stop
        run.done = True
        self.live.pop(run.id, None)
        if run.queue is not None:
            run.queue.put_nowait(None)
        run.notify()
        run.finished.set()

    # -- recovery ---------------------------------------------------------------------------
    def close_orphans(self) -> int:
        """Runs left created/running by a crash: end their streams as failed, once."""
        orphans = self.store.unfinished_runs()
        for row in orphans:
            seq = self.store.last_frame_seq(row["id"])
            error = schemas.error_message(
                row["id"],
                "internal_error",
                "The server stopped while this run was in progress.",
                "letta_nb server restarted; the run was closed as failed.",
            )
            frames = []
            if row["background"]:
                frames.append(
                    (row["id"], seq + 1, render(schemas.stop_reason_frame("error"), None))
                )
                frames.append((row["id"], seq + 2, render(dict(error), seq + 2, event="error")))
                self.store.append_frames(frames)
            self.store.finish_run(
                row["id"],
                status="failed",
                stop_reason="error",
                last_seq=seq + len(frames),
                usage=row["usage"],
                metadata={**row["metadata"], "error": error},
                total_duration_ns=None,
            )
        return len(orphans)
