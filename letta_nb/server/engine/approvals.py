"""Approvals answered exactly once.

The pending call is *claimed* when its answer arrives, in the same transaction that creates
the answering run (``Store.insert_answer_run``), so of any number of answers, concurrent or
later, exactly one wins; the others are a 400 and run nothing. Cancelling the waiting run
claims it the same way (storing a denial). Both go through one lock per agent, so their
bookkeeping is ordered too: either the cancel claimed it (the tool never runs, the run is
cancelled) or the approval did, and the cancel then applies to the answering run, which
executes the approved tool, then stops as cancelled. A run whose approval was answered is
never rewritten.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from letta_nb.server.engine.db import Db
from letta_nb.server.engine.history import (
    approval_response_message,
    denial_text,
    tool_return_message,
)
from letta_nb.server.engine.live import LiveRun
from letta_nb.server.ids import new_id
from letta_nb.server.turns import Decision, TurnRequest

NOTHING_PENDING = (
    "Cannot process approval response: No tool call is currently awaiting approval "
    "(it may already have been answered)."
)
CANCEL_REASON = "The run waiting for this approval was cancelled."


@dataclass(slots=True)
class Claim:
    """What an answer got: the pending call (None: nothing pending), whether this answer
    claimed it, and why not when it did not match."""

    pending: dict[str, Any] | None
    claimed: bool
    mismatch: str | None = None


def mismatch(turn: TurnRequest, pending: dict[str, Any]) -> str | None:
    """Why ``turn`` does not answer ``pending`` (None when it does). Fills the legacy form's
    tool_call_id once its ``approval_request_id`` names the pending request."""
    expected = pending["tool_call_id"]
    for d in turn.decisions:
        if d.legacy_request_id is None:
            continue
        if d.legacy_request_id not in (pending["message"]["id"], expected):
            return (
                f"Invalid approval_request_id. Expected '{pending['message']['id']}', "
                f"but received '{d.legacy_request_id}'."
            )
        d.tool_call_id = expected
    received = sorted(d.tool_call_id for d in turn.decisions)
    if received == [expected]:
        return None
    return f"Invalid tool call IDs. Expected '{[expected]}', but received '{received}'."


def denial(run_id: str, pending: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    """The messages an explicit denial of ``pending`` leaves in the history."""
    decision = Decision(
        tool_call_id=pending["tool_call_id"], kind="approval", approve=False, reason=reason
    )
    return [
        approval_response_message(run_id, [decision]),
        tool_return_message(
            run_id,
            new_id("step"),
            pending["name"],
            pending["tool_call_id"],
            "error",
            denial_text(reason),
        ),
    ]


class Approvals:
    def __init__(self, db: Db) -> None:
        self._db = db
        self._locks: dict[str, asyncio.Lock] = {}
        self._answered_by: dict[str, str] = {}  # waiting run id -> the run that answered it

    def _lock(self, agent_id: str, conversation_id: str | None) -> asyncio.Lock:
        key = conversation_id or agent_id
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def claim(self, run: LiveRun, turn: TurnRequest) -> Claim:
        """Claim the pending call of the run's history for the new ``run`` (inserted on
        success)."""
        why: list[str] = []

        def accept(pending: dict[str, Any]) -> bool:
            problem = mismatch(turn, pending)
            if problem is not None:
                why.append(problem)
            return problem is None

        async with self._lock(run.agent_id, run.conversation_id):
            pending, claimed = await self._db.write(
                self._db.store.insert_answer_run,
                run.id,
                run.agent_id,
                run.background,
                accept,
                conversation_id=run.conversation_id,
                run_type=run.run_type,
            )
            if claimed:
                assert pending is not None
                self._answered_by[pending["run_id"]] = run.id
        return Claim(pending, claimed, why[0] if why else None)

    async def cancel(self, agent_id: str, run_id: str, conversation_id: str | None) -> str | None:
        """Cancel ``run_id``'s pending approval (in its history). None: cancelled here (denial
        stored, run cancelled). Otherwise the id of the run that answered it, to which the
        cancel applies (or "" when the run was not waiting at all)."""
        async with self._lock(agent_id, conversation_id):
            cancelled = await self._db.write(
                self._db.store.cancel_pending,
                agent_id,
                run_id,
                lambda pending: denial(run_id, pending, CANCEL_REASON),
                conversation_id=conversation_id,
            )
            if cancelled:
                return None
            return self._answered_by.get(run_id, "")

    def answered(self, answering_run_id: str) -> None:
        """The answering run finished: a later cancel of the waiting run changes nothing."""
        for waiting, answering in list(self._answered_by.items()):
            if answering == answering_run_id:
                del self._answered_by[waiting]
