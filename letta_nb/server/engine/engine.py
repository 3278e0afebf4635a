"""The Engine: the one object routes talk to.

It owns the live runs and composes the parts, each in its own module: the frame log
(``framelog``), the brain driver (``driver``), tool execution (``toolrun``), approvals
(``approvals``), recovery (``recovery``), the SSE readers (``reader``) and SQLite access off
the event loop (``db``). Routes call only the public methods below; every storage call they
cause runs on a worker thread.

Starting a run is one path (``send``) that takes a ``SendRequest``. A run writes into one
history: a conversation's (``SendRequest.conversation_id``) or the agent's default one. Sends
through the conversations endpoints are ``locked``: one run at a time per history (the
conversation, or the agent on the default path), any other send is the busy 409 naming the
holder's run. A background send whose otids already started a run of the agent re-attaches
to it (checked before the lock, for the retention window); the otid mapping exists only once
a run was created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from letta_nb.server import schemas
from letta_nb.server.brains.base import Brain
from letta_nb.server.engine.approvals import NOTHING_PENDING, Approvals
from letta_nb.server.engine.db import Db
from letta_nb.server.engine.driver import RunDriver
from letta_nb.server.engine.framelog import FrameLog
from letta_nb.server.engine.history import History
from letta_nb.server.engine.live import ForegroundPipe, LiveRun
from letta_nb.server.engine.reader import read_foreground, read_run
from letta_nb.server.engine.recovery import Settler, close_orphans
from letta_nb.server.engine.toolrun import ToolRunner
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import new_id
from letta_nb.server.storage import Page, Store
from letta_nb.server.turns import TurnRequest

log = logging.getLogger(__name__)

BUSY_MESSAGE = (
    "CONFLICT: Cannot send a new message: Another request (run_id={}) is currently being "
    "processed for this conversation. Please wait for it to complete."
)
NO_ACTIVE_RUN = "INVALID_ARGUMENT: No active runs found for this conversation."
NOT_BACKGROUND = (
    "INVALID_ARGUMENT: Run was not created in background mode, so it cannot be retrieved."
)
PENDING_MESSAGE = (
    "CONFLICT: Cannot send a new message: The agent is waiting for approval on a tool call. "
    "Please approve or deny the pending request before continuing."
)
CANCEL_WAIT = 5.0


def otid_key(otids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(otids)).encode()).hexdigest()[:32]


@dataclass(slots=True)
class SendRequest:
    """What a POST to ``/v1/agents/{id}/messages`` or ``/v1/conversations/{id}/messages``
    asks for, validated. ``conversation_id``: the created conversation it writes to (None:
    the agent's default history); ``locked``: one run at a time in that history."""

    turn: TurnRequest
    streaming: bool = False
    background: bool = False
    include_pings: bool = True
    stream_tokens: bool = False
    max_steps: int = 50
    conversation_id: str | None = None
    locked: bool = False


@dataclass(slots=True)
class Started:
    """A send's outcome: the run to read (``reattached``: an existing run found by otid)."""

    run_id: str
    run: LiveRun | None = None
    reattached: bool = False


@dataclass(slots=True)
class EngineSettings:
    """What the engine needs of ``ServerConfig`` (app.py fills it in)."""

    workdir: Path
    retention_seconds: float
    keepalive: float
    tool_timeout: float
    foreground_buffer: int
    foreground_stall: float
    brains: Mapping[str, Brain]


class Engine:
    def __init__(self, store: Store, settings: EngineSettings) -> None:
        self.settings = settings
        self.brains: Mapping[str, Brain] = settings.brains
        self._store = store
        self._db = Db(store)
        self._live: dict[str, LiveRun] = {}
        self._locks: dict[str, LiveRun] = {}  # history lock key -> the run holding it
        self._log = FrameLog(store, asyncio.get_running_loop())
        self._approvals = Approvals(self._db)
        self._tools = ToolRunner(settings.workdir, settings.tool_timeout, self._custom_source)
        self._driver = RunDriver(
            self._log,
            self._db,
            History(self._db),
            self._tools,
            self._approvals,
            self.brains,
            foreground_stall=settings.foreground_stall,
            on_finished=self._finished,
        )
        self._settler = Settler(self._log, self._driver.store_row, self._settled)

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> int:
        """Close runs a previous server left unfinished; returns how many."""
        await self._db.warm()
        return await self._db.write(close_orphans, self._store)

    async def close(self) -> None:
        """Stop live runs (a restart closes them as orphans) and flush what is queued."""
        self._settler.cancel_all()
        tasks = [run.task for run in self._live.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
        self._log.close()
        self._db.close()

    def _finished(self, run: LiveRun, row: dict[str, Any], stored: bool) -> None:
        if run.unstored or not stored:
            self._settler.start(run, row, stored)
        else:
            self._settled(run)

    def _settled(self, run: LiveRun) -> None:
        self._live.pop(run.id, None)
        self._unlock(run)
        self._log.forget(run)

    async def _custom_source(self, name: str) -> str | None:
        tool = await self._db.read(self._store.tool_by_name, name)
        source = tool.get("source_code") if tool else None
        return source if isinstance(source, str) and source else None

    # -- agents ------------------------------------------------------------------------------
    async def agent(self, agent_id: str) -> dict[str, Any]:
        agent = await self._db.read(self._store.get_agent, agent_id)
        if agent is None:
            raise not_found("Agent", agent_id)
        return agent

    async def agents(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        return await self._db.read(self._store.list_agents, page, name)

    async def create_agent(self, name: str, model: str, config: dict[str, Any]) -> dict[str, Any]:
        for tool_id in config.get("tool_ids") or []:
            await self.tool(tool_id)
        agent_id = new_id("agent")
        system = schemas.system_message(
            new_id("message"), {"id": agent_id, "config": config}, None, 0, self._store.clock()
        )
        await self._db.write(self._store.insert_agent, agent_id, name, model, config, system)
        return await self.agent(agent_id)

    async def update_agent_config(self, agent_id: str, config: dict[str, Any]) -> dict[str, Any]:
        await self._db.write(self._store.update_agent, agent_id, config=config)
        return await self.agent(agent_id)

    async def delete_agent(self, agent_id: str) -> None:
        await self.agent(agent_id)
        for run in [r for r in self._live.values() if r.agent_id == agent_id]:
            await self._cancel_one(agent_id, run.id)
        await self._db.write(self._store.delete_agent_conversations, agent_id)
        await self._db.write(self._store.delete_agent, agent_id)

    async def pending_approval(self, agent: dict[str, Any]) -> dict[str, Any] | None:
        """The agent's pending approval: its default history's, else the newest one waiting
        in one of its conversations (the message carries ``conversation_id`` then)."""
        if agent["pending"] is not None:
            return dict(agent["pending"]["message"])
        waiting = await self._db.read(self._store.conversations_pending, agent["id"])
        if not waiting:
            return None
        return {**waiting[0]["message"], "conversation_id": waiting[0].get("conversation_id")}

    # -- conversations -----------------------------------------------------------------------
    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A live conversation (404 for an unknown or deleted one)."""
        row = await self._db.read(self._store.get_conversation, conversation_id)
        if row is None or row["deleted_at"] is not None:
            raise not_found("Conversation", conversation_id)
        return row

    async def create_conversation(
        self,
        agent_id: str,
        *,
        summary: str | None = None,
        model: str | None = None,
        model_settings: dict[str, Any] | None = None,
        fork_of: tuple[str | None, str | None] | None = None,
        hidden: bool = False,
    ) -> dict[str, Any]:
        """A new conversation with its own system message. ``fork_of`` = (source
        conversation or None for the default history, last message id to copy or None):
        the source's messages are shared (same ids), later turns stay apart."""
        agent = await self.agent(agent_id)
        conversation_id = new_id("conv")
        copy: tuple[str | None, int | None] | None = None
        previous = 0
        if fork_of is not None:
            source, upto = fork_of
            upto_ord = None
            if upto is not None:
                upto_ord = await self._db.read(self._store.ord_in_history, agent_id, source, upto)
                if upto_ord is None:
                    raise not_found("Message", upto)
            copy = (source, upto_ord)
            previous = len(await self._db.read(self._store.history_ids, agent_id, source))
        system = schemas.system_message(
            new_id("message"), agent, conversation_id, previous, self._store.clock()
        )
        await self._db.write(
            self._store.insert_conversation,
            conversation_id,
            agent_id,
            summary=summary,
            model=model,
            model_settings=model_settings,
            system_message=system,
            hidden=hidden,
            fork_of=copy,
        )
        return await self.conversation(conversation_id)

    async def conversations(
        self,
        page: Page,
        *,
        agent_id: str | None,
        summary_search: str | None = None,
        order_by: str = "created_at",
    ) -> list[dict[str, Any]]:
        return await self._db.read(
            self._store.list_conversations,
            page,
            agent_id=agent_id,
            summary_search=summary_search,
            order_by=order_by,
        )

    async def update_conversation(
        self, conversation_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        await self.conversation(conversation_id)
        if fields:
            await self._db.write(self._store.update_conversation, conversation_id, **fields)
        return await self.conversation(conversation_id)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Soft delete (then 404 everywhere); its active runs are cancelled first."""
        row = await self.conversation(conversation_id)
        for run in [r for r in self._live.values() if r.conversation_id == conversation_id]:
            await self._cancel_one(row["agent_id"], run.id)
        await self._db.write(
            self._store.update_conversation, conversation_id, deleted_at=self._store.clock()
        )

    async def history_ids(self, agent_id: str, conversation_id: str | None) -> list[str]:
        return await self._db.read(self._store.history_ids, agent_id, conversation_id)

    async def agent_tools(self, agent: dict[str, Any]) -> list[dict[str, Any]]:
        """The agent's custom tools (attached by id or named), in attachment order."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for tool_id in agent["config"].get("tool_ids") or []:
            tool = await self._db.read(self._store.get_tool, tool_id)
            if tool is not None and tool["name"] not in seen:
                out.append(tool)
                seen.add(tool["name"])
        for name in agent["config"].get("tools") or []:
            tool = await self._db.read(self._store.tool_by_name, name)
            if tool is not None and tool["name"] not in seen:
                out.append(tool)
                seen.add(tool["name"])
        return out

    # -- tools -------------------------------------------------------------------------------
    async def tool(self, tool_id: str) -> dict[str, Any]:
        tool = await self._db.read(self._store.get_tool, tool_id)
        if tool is None:
            raise not_found("Tool", tool_id)
        return tool

    async def tool_named(self, name: str) -> dict[str, Any] | None:
        return await self._db.read(self._store.tool_by_name, name)

    async def tools(self, page: Page, name: str | None) -> list[dict[str, Any]]:
        return await self._db.read(self._store.list_tools, page, name)

    async def add_tool(self, tool: dict[str, Any]) -> None:
        await self._db.write(self._store.insert_tool, tool)

    async def replace_tool(self, tool: dict[str, Any]) -> None:
        await self._db.write(self._store.update_tool, tool)

    async def delete_tool(self, tool_id: str) -> None:
        await self.tool(tool_id)
        await self._db.write(self._store.delete_tool, tool_id)

    # -- runs, messages, steps -----------------------------------------------------------------
    @staticmethod
    def _with_live_state(row: dict[str, Any], live: LiveRun | None) -> dict[str, Any]:
        """A run whose end is decided but whose final row is not stored (yet) reports how it
        really ended: a reader that got the terminal frame never sees "running" after it.
        ``live`` is looked up *before* the row is read, so a run that settles meanwhile (and
        leaves the live table) still overrides a row read just before its final write."""
        if live is not None and live.ended and live.final is not None:
            return {**row, **live.final}
        return row

    async def run(self, run_id: str) -> dict[str, Any] | None:
        live = self._live.get(run_id)
        row = await self._db.read(self._store.get_run, run_id)
        return None if row is None else self._with_live_state(row, live)

    async def runs(
        self,
        page: Page,
        *,
        agent_ids: list[str],
        statuses: list[str],
        background: bool | None,
        stop_reason: str | None,
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        live = dict(self._live)
        rows = await self._db.read(
            self._store.list_runs,
            page,
            agent_ids=agent_ids,
            statuses=statuses,
            background=background,
            stop_reason=stop_reason,
            conversation_id=conversation_id,
        )
        rows = [self._with_live_state(r, live.get(r["id"])) for r in rows]
        return [r for r in rows if not statuses or r["status"] in statuses]

    async def messages(
        self,
        page: Page,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        history: str | None = None,
        default_history: bool = False,
    ) -> list[dict[str, Any]]:
        """Messages of an agent (all its histories), a run, a conversation (``history``) or
        the agent's default history (``default_history``)."""
        return await self._db.read(
            self._store.list_messages,
            page,
            agent_id=agent_id,
            run_id=run_id,
            history=history,
            default_history=default_history,
        )

    async def steps(self, page: Page, run_id: str) -> list[dict[str, Any]]:
        return await self._db.read(self._store.list_steps, page, run_id)

    async def page(
        self,
        table: str,
        order: str,
        after: str | None,
        before: str | None,
        limit: int,
        *,
        conversation_id: str | None = None,
    ) -> Page:
        """A page whose cursors name existing items (400 otherwise, never silently ignored);
        message cursors of a conversation name its own rows (``conversation_id``)."""
        cursors: dict[str, int | None] = {"after": None, "before": None}
        for key, value in (("after", after), ("before", before)):
            if value:
                ordinal = await self._db.read(
                    self._store.ord_of, table, value, conversation_id=conversation_id
                )
                if ordinal is None:
                    raise ApiError(400, f"Cursor {key}={value!r} does not name an existing item")
                cursors[key] = ordinal
        return Page(order, cursors["after"], cursors["before"], limit)

    # -- sending -----------------------------------------------------------------------------
    async def send(self, agent_id: str | None, req: SendRequest) -> Started:
        """Start a run (or find the run a re-sent otid already started).

        ``agent_id`` may be None when ``req.conversation_id`` names the conversation (its
        agent is the conversation's). One read finds the agent, the conversation and the
        otid's run; the pending approval of a locked history is checked again in the run's
        insert (a run that just asked for approval released the lock after storing it).
        """
        turn = req.turn
        key = None
        if req.background and turn.otids and not turn.is_approval:
            key = otid_key(turn.otids)
        agent, conversation, existing = await self._db.read(
            self._store.send_state, agent_id, req.conversation_id, key
        )
        if req.conversation_id is not None and (
            conversation is None or conversation["deleted_at"] is not None
        ):
            raise not_found("Conversation", req.conversation_id)
        if agent is None:
            raise not_found("Agent", str(agent_id))
        # before the lock, as Letta: a re-sent message is never "busy" with its own run
        if existing and self.within_retention(existing):
            return Started(existing["id"], reattached=True)
        if agent["model"] not in self.brains:
            raise ApiError(400, f"Model {agent['model']!r} is not available on this server.")
        conversation_id = req.conversation_id
        run = LiveRun(
            id=new_id("run"),
            agent_id=agent["id"],
            background=req.background,
            include_pings=req.include_pings and req.streaming,
            stream_tokens=req.stream_tokens and req.streaming,
            max_steps=max(1, req.max_steps),
            conversation_id=conversation_id,
            run_type="send_conversation_message" if conversation_id else "send_message",
        )
        if req.locked:
            self._lock(conversation_id or agent["id"], run)
        pending = (conversation or agent)["pending"]
        try:
            return await self._start(run, agent, req, key, pending)
        except BaseException:
            self._unlock(run)
            raise

    def _lock(self, key: str, run: LiveRun) -> None:
        """Take the history's lock for ``run`` (synchronously: no await between the check and
        the claim), or refuse with Letta's busy 409 naming the holder."""
        holder = self._locks.get(key)
        if holder is not None and not holder.unlocked:
            raise ApiError(
                409, BUSY_MESSAGE.format(holder.id), retry=False, extra={"run_id": holder.id}
            )
        run.lock_key = key
        self._locks[key] = run

    def _unlock(self, run: LiveRun) -> None:
        run.unlocked = True
        if run.lock_key is not None and self._locks.get(run.lock_key) is run:
            del self._locks[run.lock_key]

    async def _start(
        self,
        run: LiveRun,
        agent: dict[str, Any],
        req: SendRequest,
        key: str | None,
        pending: dict[str, Any] | None,
    ) -> Started:
        turn = req.turn
        failure: tuple[str, str, str] | None = None
        claimed: dict[str, Any] | None = None
        if turn.is_approval:
            claim = await self._approvals.claim(run, turn)
            if claim.pending is None:
                raise ApiError(400, NOTHING_PENDING, retry=False)
            if claim.claimed:
                claimed = claim.pending
            elif not req.streaming:
                raise ApiError(400, claim.mismatch, retry=False)
            else:  # Letta: the answering run fails and the approval stays pending
                failure = (
                    "internal_error",
                    "An unknown error occurred with the LLM streaming request.",
                    claim.mismatch or "",
                )
        if claimed is None:
            if pending is None and not turn.is_approval:
                pending = await self._insert(run, req, key, guard=req.locked)
            if pending is not None and not turn.is_approval:
                if not req.streaming:  # the same body on every path (Letta's conversation
                    raise ApiError(  # 409 has a bare string here)
                        409,
                        {
                            "code": "PENDING_APPROVAL",
                            "message": PENDING_MESSAGE,
                            "pending_request_id": pending["message"]["id"],
                        },
                        retry=False,
                    )
                failure = ("internal_error", PENDING_MESSAGE, PENDING_MESSAGE)
                await self._insert(run, req, key, guard=False)
            elif turn.is_approval:
                await self._insert(run, req, key, guard=False)
        if req.streaming and not req.background:
            run.pipe = ForegroundPipe(self.settings.foreground_buffer)
        self._live[run.id] = run
        run.task = asyncio.get_running_loop().create_task(
            self._driver.drive(run, agent, turn, failure, claimed)
        )
        return Started(run.id, run)

    async def _insert(
        self, run: LiveRun, req: SendRequest, key: str | None, *, guard: bool
    ) -> dict[str, Any] | None:
        """Store the run (None), or, with ``guard``, return its history's pending approval
        instead of storing it."""
        return await self._db.write(
            self._store.insert_run,
            run.id,
            run.agent_id,
            req.background,
            key,
            conversation_id=run.conversation_id,
            run_type=run.run_type,
            otids=() if req.turn.is_approval else req.turn.otids,
            guard_pending=guard,
        )

    async def resume_target(
        self,
        agent_id: str,
        conversation_id: str | None,
        *,
        run_id: str | None,
        otid: str | None,
    ) -> dict[str, Any]:
        """The run a conversation's stream resume reads: ``run_id``, else the run ``otid``
        started, else the history's newest active run. A run of another history is refused
        (404), unlike Letta."""
        where = conversation_id or "default"
        if run_id is not None:
            row = await self.run(run_id)
            if row is None:
                raise not_found("Run", run_id)
            if row["agent_id"] != agent_id or row["conversation_id"] != conversation_id:
                raise ApiError(404, f"Run {run_id} does not belong to conversation {where}.")
            return row
        if otid is not None:
            row = await self._db.read(self._store.run_for_otid, agent_id, otid)
            if row is None or row["conversation_id"] != conversation_id:
                raise ApiError(
                    404,
                    f"No run found for otid={otid}. The run may have expired or never existed.",
                )
            return self._with_live_state(row, self._live.get(row["id"]))
        active = [
            r
            for r in self._live.values()
            if r.agent_id == agent_id and r.conversation_id == conversation_id and not r.ended
        ]
        if not active:
            raise ApiError(400, NO_ACTIVE_RUN)
        newest = max(active, key=lambda r: r.started)
        if not newest.background:
            raise ApiError(400, NOT_BACKGROUND)
        row = await self.run(newest.id)
        assert row is not None
        return row

    def within_retention(self, row: dict[str, Any]) -> bool:
        return self._store.clock() - row["created_at"] <= self.settings.retention_seconds

    def stream(
        self, run_id: str, starting_after: int, *, include_pings: bool
    ) -> AsyncIterator[bytes]:
        """A background run's frames after ``starting_after``, live to its end."""
        return read_run(
            self._db,
            self._live,
            run_id,
            starting_after,
            include_pings=include_pings,
            keepalive=self.settings.keepalive,
        )

    def foreground(self, run: LiveRun, *, include_pings: bool) -> AsyncIterator[bytes]:
        assert run.pipe is not None
        return read_foreground(
            run.id, run.pipe, include_pings=include_pings, keepalive=self.settings.keepalive
        )

    async def wait(self, run: LiveRun) -> None:
        await run.finished.wait()

    # -- cancelling --------------------------------------------------------------------------
    async def cancel(self, agent_id: str, run_ids: list[str] | None) -> dict[str, str]:
        """Cancel the given runs, or every active run of the agent plus one awaiting approval.
        Letta's per-run answers: "cancelled", or "failed" for an unknown/foreign run."""
        agent = await self.agent(agent_id)
        if not run_ids:
            run_ids = [r.id for r in self._live.values() if r.agent_id == agent_id and not r.done]
            if agent["pending"]:
                run_ids.append(agent["pending"]["run_id"])
        out: dict[str, str] = {}
        for run_id in run_ids:
            out[run_id] = await self._cancel_one(agent_id, run_id)
        return out

    async def cancel_history(self, agent_id: str, conversation_id: str | None) -> dict[str, str]:
        """Cancel one history's active runs and the run waiting for its approval (Letta's
        default-path cancel takes every run of the agent; its conversation cancel leaves the
        approval pending, letta#3176). 409 when there is nothing to cancel."""
        run_ids = [
            r.id
            for r in self._live.values()
            if r.agent_id == agent_id and r.conversation_id == conversation_id and not r.done
        ]
        pending = await self._db.read(self._store.pending_approval, agent_id, conversation_id)
        if pending is not None and pending["run_id"] not in run_ids:
            run_ids.append(pending["run_id"])
        if not run_ids:
            raise ApiError(
                409,
                "CONFLICT: No active runs to cancel for conversation "
                f"{conversation_id or 'default'}",
                retry=False,
            )
        return {run_id: await self._cancel_one(agent_id, run_id) for run_id in run_ids}

    async def _cancel_one(self, agent_id: str, run_id: str) -> str:
        run = self._live.get(run_id)
        if run is not None and run.agent_id != agent_id:
            return "failed"
        if run is not None and not run.done:
            run.cancel_requested = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.finished.wait(), CANCEL_WAIT)
            if run.stop_reason != "requires_approval":
                return "cancelled"
        row = await self._db.read(self._store.get_run, run_id)
        if row is None or row["agent_id"] != agent_id:
            return "failed"
        if row["stop_reason"] == "requires_approval" and row["status"] == "completed":
            answering = await self._approvals.cancel(agent_id, run_id, row["conversation_id"])
            if answering:  # the approval won: the cancel applies to the run executing it
                await self._cancel_one(agent_id, answering)
        return "cancelled"

    # -- inspection (tests, health) ----------------------------------------------------------
    def live_run(self, run_id: str) -> LiveRun | None:
        return self._live.get(run_id)

    def writes_waiting(self) -> int:
        return self._db.writes_waiting
