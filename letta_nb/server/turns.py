"""What a POST to ``/v1/agents/{id}/messages`` asks for, from Letta's (validated) message items.

Accepted forms (as the SDK sends them): ``{"role":"user","content":str|[parts],"otid":...}``,
``{"type":"approval","approvals":[{"type":"approval"|"tool",...}]}``, the legacy
``{"type":"approval","approve":bool,"approval_request_id":...}``, ``{"type":"tool_return",
"tool_returns":[...]}``, and the ``input`` shortcut (a string or a list of content parts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from letta_nb.protocol import content_text
from letta_nb.server.bodies import ApprovalItem, SendMessage, ToolReturnItem
from letta_nb.server.errors import ApiError


@dataclass(slots=True)
class Decision:
    """One answer to a pending tool call: approve/deny, or a client-supplied tool result."""

    tool_call_id: str
    kind: str  # "approval" or "tool"
    approve: bool | None = None
    reason: str | None = None
    status: str | None = None
    tool_return: str | None = None
    legacy_request_id: str | None = None


@dataclass(slots=True)
class TurnRequest:
    user_text: str | None = None
    otids: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def is_approval(self) -> bool:
        return bool(self.decisions)


def _text(content: Any) -> str:
    try:
        return content_text(content)
    except (TypeError, AttributeError, KeyError) as exc:
        raise ApiError(422, "message content must be a string or a list of content parts") from exc


def _tool_decision(item: ApprovalItem | ToolReturnItem) -> Decision:
    return Decision(
        tool_call_id=item.tool_call_id,
        kind="tool",
        status=item.status or "success",
        tool_return=_text(item.tool_return if item.tool_return is not None else ""),
    )


def parse_turn(body: SendMessage) -> TurnRequest:
    """The body's messages/input as one turn; 422 on shapes Letta rejects."""
    turn = TurnRequest()
    texts: list[str] = []
    if body.messages is None and body.input is not None:
        texts.append(_text(body.input))
    elif not body.messages:
        raise ApiError(422, "messages must be a non-empty list (or pass input)")
    for item in body.messages or []:
        kind = item.type
        if kind is None and ("approve" in item.model_fields_set or item.approval_request_id):
            kind = "approval"
        if kind == "approval":
            if item.approvals:
                for a in item.approvals:
                    if (a.type or "approval") == "tool":
                        turn.decisions.append(_tool_decision(a))
                    else:
                        turn.decisions.append(
                            Decision(
                                tool_call_id=a.tool_call_id,
                                kind="approval",
                                approve=bool(a.approve),
                                reason=a.reason,
                            )
                        )
            elif item.approve is not None:
                turn.decisions.append(
                    Decision(
                        tool_call_id="",
                        kind="approval",
                        approve=item.approve,
                        reason=item.reason,
                        legacy_request_id=item.approval_request_id or "",
                    )
                )
            else:
                raise ApiError(422, "approval message needs approvals or approve")
        elif kind == "tool_return":
            if not item.tool_returns:
                raise ApiError(422, "tool_return message needs tool_returns")
            turn.decisions.extend(_tool_decision(r) for r in item.tool_returns)
        elif kind in (None, "message"):
            texts.append(_text(item.content))
            if item.otid:
                turn.otids.append(item.otid)
        else:
            raise ApiError(422, f"unsupported message type: {kind}")
    if texts:
        turn.user_text = "\n".join(texts)
    return turn
