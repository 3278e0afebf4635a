"""What a POST to ``/v1/agents/{id}/messages`` asks for, parsed from Letta's message items.

Accepted forms (as the SDK sends them): ``{"role":"user","content":str|[parts],"otid":...}``,
``{"type":"approval","approvals":[{"type":"approval"|"tool",...}]}``, the legacy
``{"type":"approval","approve":bool,"approval_request_id":...}``, ``{"type":"tool_return",
"tool_returns":[...]}``, and the ``input`` shortcut (a string or a list of content parts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from letta_nb.protocol import content_text
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
    raw_approvals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_approval(self) -> bool:
        return bool(self.decisions)


def _content_text(content: Any) -> str:
    """Letta accepts a string or a list of content parts; anything else is a 422."""
    if content is None or isinstance(content, str | list):
        return content_text(content)
    raise ApiError(422, "message content must be a string or a list of content parts")


def _tool_decision(item: dict[str, Any]) -> Decision:
    return Decision(
        tool_call_id=str(item.get("tool_call_id", "")),
        kind="tool",
        status=str(item.get("status") or "success"),
        tool_return=_content_text(item.get("tool_return", "")),
    )


def parse_turn(body: dict[str, Any]) -> TurnRequest:
    """Validate the body's messages/input into one turn; 422 on shapes Letta rejects."""
    messages = body.get("messages")
    turn = TurnRequest()
    texts: list[str] = []
    if messages is None and body.get("input") is not None:
        texts.append(_content_text(body["input"]))
    elif not isinstance(messages, list) or not messages:
        raise ApiError(422, "messages must be a non-empty list (or pass input)")
    for item in messages or []:
        if not isinstance(item, dict):
            raise ApiError(422, "each message must be an object")
        kind = item.get("type")
        if kind is None and ("approve" in item or "approval_request_id" in item):
            kind = "approval"
        if kind == "approval":
            approvals = item.get("approvals")
            if approvals:
                for a in approvals:
                    if a.get("type", "approval") == "tool":
                        turn.decisions.append(_tool_decision(a))
                    else:
                        turn.decisions.append(
                            Decision(
                                tool_call_id=str(a.get("tool_call_id", "")),
                                kind="approval",
                                approve=bool(a.get("approve")),
                                reason=a.get("reason"),
                            )
                        )
                    turn.raw_approvals.append(a)
            elif "approve" in item:
                turn.decisions.append(
                    Decision(
                        tool_call_id="",
                        kind="approval",
                        approve=bool(item.get("approve")),
                        reason=item.get("reason"),
                        legacy_request_id=str(item.get("approval_request_id") or ""),
                    )
                )
            else:
                raise ApiError(422, "approval message needs approvals or approve")
        elif kind == "tool_return":
            for r in item.get("tool_returns") or []:
                turn.decisions.append(_tool_decision(r))
        elif kind in (None, "message"):
            texts.append(_content_text(item.get("content")))
            if item.get("otid"):
                turn.otids.append(str(item["otid"]))
        else:
            raise ApiError(422, f"unsupported message type: {kind}")
    if texts:
        turn.user_text = "\n".join(texts)
    return turn
