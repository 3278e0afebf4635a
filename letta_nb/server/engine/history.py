"""A history's stored messages: what a run adds (what ``messages.list`` shows).

Each run writes into its own history: its conversation's, or the agent's default history
(``LiveRun.conversation_id`` None).
"""

from __future__ import annotations

from typing import Any

from letta_nb.server import schemas
from letta_nb.server.engine.db import Db
from letta_nb.server.engine.live import LiveRun
from letta_nb.server.ids import derive_otid, new_id
from letta_nb.server.turns import Decision

DENIED = "Error: request to call tool denied."


def denial_text(reason: str | None) -> str:
    return f"{DENIED} User reason: {reason}" if reason else DENIED


def tool_return_message(
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
    return {
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


def approval_response_message(run_id: str, decisions: list[Decision]) -> dict[str, Any]:
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
    return {
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
    }


class History:
    """Writes messages through the write thread, in the order the run produces them."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, run: LiveRun, message: dict[str, Any]) -> None:
        await self._db.write(
            self._db.store.insert_message, run.agent_id, run.id, message, run.conversation_id
        )

    async def tool_return(
        self,
        run: LiveRun,
        step_id: str,
        name: str,
        call_id: str,
        status: str,
        text: str,
        *,
        sandbox: bool = False,
    ) -> dict[str, Any]:
        frame = tool_return_message(run.id, step_id, name, call_id, status, text, sandbox=sandbox)
        await self.add(run, frame)
        return frame
