"""The brain driver: plays a brain's turn generator and turns its events into Letta frames.

Each run is one asyncio task on the server loop. It assigns message ids, otids and step ids,
executes tools (``ToolRunner``), stores messages (``History``) and writes frames through the
``FrameLog``. It checks for a cancel request, a broken frame log and a stalled foreground
reader between events, and always ends the run (``finish``), whatever failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from letta_nb.server import schemas
from letta_nb.server.brains.base import (
    Assistant,
    Brain,
    Fail,
    Reasoning,
    Sleep,
    ToolCall,
    ToolResult,
    Turn,
    TurnContext,
)
from letta_nb.server.engine.approvals import Approvals
from letta_nb.server.engine.db import Db
from letta_nb.server.engine.framelog import FrameLog
from letta_nb.server.engine.history import History, approval_response_message, denial_text
from letta_nb.server.engine.live import LiveRun
from letta_nb.server.engine.toolrun import ToolRunner, workdir_of
from letta_nb.server.engine.wire import CANCELLED, DONE, TextDeltas, error_frames, render
from letta_nb.server.ids import derive_otid, new_id, new_tool_call_id
from letta_nb.server.storage import Page
from letta_nb.server.turns import TurnRequest

log = logging.getLogger(__name__)

SLEEP_SLICE = 0.05
PACE_SLICE = 0.25
YIELD_EVERY = 1024
ARG_CHUNK = 8
_LAST_50 = Page("desc", None, None, 50)


def pieces(text: str) -> int:
    """Deterministic token count: whitespace-separated pieces."""
    return len(text.split())


class RunCancelled(Exception):
    """Raised inside a run's driver when a cancel request is seen."""


class LogBroken(Exception):
    """Raised inside a run's driver when one of its frame batches could not be stored."""


def storage_error(run: LiveRun) -> dict[str, Any]:
    exc = run.broken
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else None
    return schemas.error_message(
        run.id,
        "internal_error",
        "The server could not store this run's stream (database locked or disk full), "
        "so the run was stopped.",
        detail,
    )


class RunDriver:
    def __init__(
        self,
        log: FrameLog,
        db: Db,
        history: History,
        tools: ToolRunner,
        approvals: Approvals,
        brains: Mapping[str, Brain],
        *,
        foreground_stall: float,
        on_finished: Callable[[LiveRun, dict[str, Any], bool], None],
    ) -> None:
        self.log = log
        self.db = db
        self.history = history
        self.tools = tools
        self.approvals = approvals
        self.brains = brains
        self.foreground_stall = foreground_stall
        self._on_finished = on_finished

    # -- the whole run -----------------------------------------------------------------------
    async def drive(
        self,
        run: LiveRun,
        agent: dict[str, Any],
        turn: TurnRequest,
        failure: tuple[str, str, str] | None,
        claimed: dict[str, Any] | None,
    ) -> None:
        stop = "end_turn"
        error: dict[str, Any] | None = None
        try:
            if run.include_pings:
                ping = schemas.envelope(
                    new_id("ping"), "ping", otid=None, step_id=None, run_id=run.id
                )
                self.log.emit(run, ping)
            if failure is not None:
                error_type, message, detail = failure
                stop, error = "error", schemas.error_message(run.id, error_type, message, detail)
            else:
                brain = self.brains[agent["model"]]
                ctx = await self._context(agent, run)
                step = self._new_step(run)
                if claimed is not None:
                    result, step = await self._apply_decisions(run, agent, turn, claimed, step)
                    gen = brain.resume_after_approval(ctx, result)
                else:
                    text = turn.user_text or ""
                    await self.history.add(
                        run,
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
        except LogBroken:
            stop, error = "error", storage_error(run)
        except Exception as exc:  # a brain, tool or storage bug must end the run, never hang
            log.warning("run %s failed: %r", run.id, exc)
            stop = "error"
            error = schemas.error_message(
                run.id, "internal_error", "An unknown error occurred with the run.", repr(exc)
            )
        await self.finish(run, stop, error)

    def _check(self, run: LiveRun) -> None:
        if run.broken is not None:
            raise LogBroken
        if run.cancel_requested:
            raise RunCancelled

    async def _pace(self, run: LiveRun) -> None:
        """Backpressure: wait for a slow foreground reader; cut it loose if it stays stalled."""
        pipe = run.pipe
        if pipe is None or not pipe.full:
            return
        deadline = time.monotonic() + self.foreground_stall
        while not await pipe.wait_room(min(PACE_SLICE, max(0.0, deadline - time.monotonic()))):
            self._check(run)
            if time.monotonic() >= deadline:
                error = schemas.error_message(
                    run.id,
                    "internal_error",
                    "This stream was read too slowly and was closed; the run goes on and its "
                    f"messages are stored (run {run.id}).",
                    None,
                )
                log.warning("run %s: foreground reader stalled; stream closed", run.id)
                pipe.abandon(render(error, None, event="error"))
                return

    async def _context(self, agent: dict[str, Any], run: LiveRun) -> TurnContext:
        workdir = workdir_of(self.tools.workdir_root, agent["id"])
        history = []
        recent = await self.db.read(  # this run's history only: its conversation's, or the default
            self.db.store.list_messages,
            _LAST_50,
            agent_id=agent["id"],
            history=run.conversation_id,
            default_history=run.conversation_id is None,
        )
        for m in recent:
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

    async def _play(
        self, run: LiveRun, agent: dict[str, Any], brain: Brain, gen: Turn, step: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """Run the brain generator to its end; returns (stop_reason, error_message or None)."""
        gated = await self._gated(agent, brain)
        open_msg: TextDeltas | None = None
        send: ToolResult | None = None
        count = 0
        try:
            while True:
                self._check(run)
                if run.pipe is not None and run.pipe.full:
                    await self._pace(run)
                elif self.log.ahead(run):
                    await self.log.catch_up(run)
                try:
                    event = gen.send(send)
                except StopIteration:
                    await self._close(run, open_msg, step)
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
                        await self._close(run, open_msg, step)
                        mid = new_id("message")
                        open_msg = TextDeltas(kind, mid, derive_otid(mid))
                    open_msg.append(event.text)
                    if run.stream_tokens:
                        self._emit_delta(run, open_msg, step, event.text)
                    continue
                if isinstance(event, Sleep):
                    # A pause inside a message (e.g. /long N DELAY_MS) must not split it:
                    # the next delta continues the same message id.
                    await self._sleep(run, event.seconds)
                    continue
                await self._close(run, open_msg, step)
                open_msg = None
                if isinstance(event, Fail):
                    return "llm_api_error", schemas.error_message(
                        run.id, event.error_type, event.message, event.message
                    )
                elif isinstance(event, ToolCall):
                    if event.name in gated:
                        await self._request_approval(run, agent, event, step)
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

    async def _gated(self, agent: dict[str, Any], brain: Brain) -> set[str]:
        """Tools needing approval: the brain's, plus tool rules and toggles on the agent."""
        cfg = agent["config"]
        gated = set(brain.approval_required)
        for rule in cfg.get("tool_rules") or []:
            if rule.get("type") == "requires_approval":
                gated.add(rule.get("tool_name"))
        for tool_id in cfg.get("tool_ids") or []:
            tool = await self.db.read(self.db.store.get_tool, tool_id)
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
            self._check(run)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(SLEEP_SLICE, left))

    # -- frames of each message kind --------------------------------------------------------
    def _emit_delta(self, run: LiveRun, msg: TextDeltas, step: dict[str, Any], text: str) -> None:
        if not run.background:
            self.log.emit(run, msg.frame(run.id, step["id"], text))
            return
        run.seq += 1
        self.log.queue(run, msg.delta_bytes(run.id, step["id"], run.seq, text))

    async def _close(self, run: LiveRun, msg: TextDeltas | None, step: dict[str, Any]) -> None:
        """End the open message: persist it whole (and stream it whole without stream_tokens)."""
        if msg is None:
            return
        full = msg.full()
        step["completion_tokens"] += pieces(full)
        frame = msg.frame(run.id, step["id"], full)
        if not run.stream_tokens:
            self.log.emit(run, dict(frame))
        await self.history.add(run, frame)

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
            self.log.emit(run, frame(dict(full), [dict(full)]))
            return
        keep_nulls = kind == "approval_request_message"
        first = (
            {"name": name, "arguments": None, "tool_call_id": call_id}
            if keep_nulls
            else {"name": name, "tool_call_id": call_id}
        )
        self.log.emit(run, frame(first, dict(first)))
        for i in range(0, len(arguments), ARG_CHUNK):
            part = arguments[i : i + ARG_CHUNK]
            delta = (
                {"name": None, "arguments": part, "tool_call_id": call_id}
                if keep_nulls
                else {"arguments": part, "tool_call_id": call_id}
            )
            self.log.emit(run, frame(delta, dict(delta)))

    async def _request_approval(
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
        await self.history.add(run, message)
        await self.db.write(
            self.db.store.set_pending,
            agent["id"],
            run.conversation_id,
            {
                "message": message,
                "tool_call_id": call_id,
                "name": call.name,
                "arguments": call.arguments,
                "step_id": step["id"],
                "run_id": run.id,
                "conversation_id": run.conversation_id,
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
        await self.history.add(
            run,
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
        result = await self.tools.run(brain, agent["id"], call.name, call.arguments, call_id)
        self._check(run)
        frame = await self.history.tool_return(
            run, step["id"], call.name, call_id, result.status, result.tool_return
        )
        self.log.emit(run, dict(frame))
        return result

    async def _apply_decisions(
        self,
        run: LiveRun,
        agent: dict[str, Any],
        turn: TurnRequest,
        pending: dict[str, Any],
        step: dict[str, Any],
    ) -> tuple[ToolResult, dict[str, Any]]:
        """The claimed call's answer: stored, and its tool result produced.

        An approved call runs even if a cancel arrives meanwhile (the approval won the race);
        the cancel then stops the run right after the tool's return.
        """
        answer = approval_response_message(run.id, turn.decisions)
        await self.history.add(run, answer)
        decision = turn.decisions[0]
        name, call_id = pending["name"], pending["tool_call_id"]
        args = dict(pending["arguments"])
        if decision.kind == "tool":
            result = ToolResult(
                call_id, name, decision.status or "success", decision.tool_return or "", args
            )
            await self.history.tool_return(
                run, step["id"], name, call_id, result.status, result.tool_return
            )
        elif decision.approve:
            brain = self.brains[agent["model"]]
            result = await self.tools.run(brain, agent["id"], name, args, call_id)
            frame = await self.history.tool_return(
                run,
                pending["step_id"],
                name,
                call_id,
                result.status,
                result.tool_return,
                sandbox=True,
            )
            self.log.emit(run, dict(frame))
            self._check(run)
        else:
            text = denial_text(decision.reason)
            result = ToolResult(call_id, name, "error", text, args)
            await self.history.tool_return(run, step["id"], name, call_id, "error", text)
        step["prompt_tokens"] += max(1, pieces(result.tool_return))
        return result, step

    # -- the end of a run -------------------------------------------------------------------
    async def finish(self, run: LiveRun, stop: str, error: dict[str, Any] | None) -> None:
        """End the run for its readers and in storage, whatever fails on the way."""
        usage = {
            "completion_tokens": sum(s["completion_tokens"] for s in run.steps),
            "prompt_tokens": sum(s["prompt_tokens"] for s in run.steps),
            "step_count": len(run.steps),
        }
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        metadata: dict[str, Any] = {"run_type": run.run_type}
        run.unlocked = True  # its terminal frame is next: the history takes the next send
        status = "completed"
        if run.broken is None:
            if stop == "cancelled":
                status = "cancelled"
                self.log.emit(run, CANCELLED)
                self.log.emit(run, DONE)
            elif error is not None:
                status = "failed"
                self.log.emit(run, schemas.stop_reason_frame(stop))
                self.log.emit(run, dict(error), event="error")
                if not run.background:
                    self.log.emit(run, DONE)
            else:
                self.log.emit(run, schemas.stop_reason_frame(stop))
                frame = schemas.usage_frame(usage)
                if not run.stream_tokens:  # recorded: whole-message runs report zero cache
                    frame.update(cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0)
                self.log.emit(run, frame)
                self.log.emit(run, DONE)
            if run.background:
                await self.log.drain(run)  # the status never says "ended" before the frames
        if run.broken is not None:  # nothing after the hole: end visibly failed right there
            status, stop, error = "failed", "error", storage_error(run)
            log.error("run %s: frame log failed at seq %d: %s", run.id, run.committed, run.broken)
            self.log.replace_tail(run, error_frames(error, run.committed + 1))
            await self.log.store_tail(run)
        if error is not None:
            metadata["error"] = error
        if run.steps:
            run.steps[-1]["stop_reason"] = stop
        row = {
            "status": status,
            "stop_reason": stop,
            "last_seq": run.seq,
            "usage": usage,
            "metadata": metadata,
            "total_duration_ns": int((time.monotonic() - run.started) * 1e9),
            "ttft_ns": run.ttft_ns,
            "steps": list(run.steps),
            "agent_id": run.agent_id,
        }
        # A row saying "ended" only once the stream's end is stored: until then a restart
        # still sees the run unfinished and closes it right after its last stored frame.
        run.final = {k: v for k, v in row.items() if k not in ("steps", "agent_id")}
        run.final["completed_at"] = self.db.store.clock()
        run.status, run.stop_reason, run.ended = status, stop, True
        stored = not run.unstored and await self.store_row(run, row)
        run.done = True
        if run.pipe is not None:
            run.pipe.close()
        run.notify()
        run.finished.set()
        self.approvals.answered(run.id)
        self._on_finished(run, row, stored)

    async def store_row(self, run: LiveRun, row: dict[str, Any]) -> bool:
        """Write the run's final row; False (logged) if storage refuses it for now."""
        try:
            await self.db.write(self.db.store.finish_run, run.id, **row)
        except Exception as exc:
            log.error("run %s: could not store its final state yet: %s", run.id, exc)
            return False
        return True
