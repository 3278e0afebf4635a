"""Letta's wire vocabulary, defined once for the client and the embedded server (stdlib only).

Message types, run statuses and stop reasons are `StrEnum`s: each member *is* its wire string,
so they compare, hash and serialize as the plain strings the server sends, and unknown values
from newer servers still flow through as `str`. The stop-reason → run-status table is Letta's
(`letta_stop_reason.py`); `content_text` is the one reading of a message's `content` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final


class MessageType(StrEnum):
    """`message_type` of a streamed frame or a stored message (content first, control last)."""

    REASONING = "reasoning_message"
    HIDDEN_REASONING = "hidden_reasoning_message"
    ASSISTANT = "assistant_message"
    TOOL_CALL = "tool_call_message"
    TOOL_RETURN = "tool_return_message"
    APPROVAL_REQUEST = "approval_request_message"
    APPROVAL_RESPONSE = "approval_response_message"
    USER = "user_message"
    SYSTEM = "system_message"
    STOP_REASON = "stop_reason"
    USAGE = "usage_statistics"
    ERROR = "error_message"
    PING = "ping"


#: Frames a reader stores without a visible seq (they still use up a number on the server).
HIDDEN_SEQ_TYPES: Final = frozenset({MessageType.STOP_REASON, MessageType.USAGE})


class RunStatus(StrEnum):
    """A server-side run's `status`."""

    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: `active=true` on `GET /v1/runs/`: runs that may still produce frames.
ACTIVE_RUN_STATUSES: Final = frozenset({RunStatus.CREATED, RunStatus.RUNNING})
#: Runs that will never produce another frame.
FINAL_RUN_STATUSES: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StopReason(StrEnum):
    """Letta's `StopReasonType`."""

    END_TURN = "end_turn"
    MAX_STEPS = "max_steps"
    TOOL_RULE = "tool_rule"
    REQUIRES_APPROVAL = "requires_approval"
    CANCELLED = "cancelled"
    ERROR = "error"
    LLM_API_ERROR = "llm_api_error"
    INVALID_LLM_RESPONSE = "invalid_llm_response"
    INVALID_TOOL_CALL = "invalid_tool_call"
    NO_TOOL_CALL = "no_tool_call"
    MAX_TOKENS_EXCEEDED = "max_tokens_exceeded"
    CONTEXT_WINDOW_OVERFLOW = "context_window_overflow_in_system_prompt"
    INSUFFICIENT_CREDITS = "insufficient_credits"


#: The run status each stop reason implies (Letta's table).
STATUS_BY_STOP_REASON: Final[Mapping[str, RunStatus]] = {
    StopReason.END_TURN: RunStatus.COMPLETED,
    StopReason.MAX_STEPS: RunStatus.COMPLETED,
    StopReason.TOOL_RULE: RunStatus.COMPLETED,
    StopReason.REQUIRES_APPROVAL: RunStatus.COMPLETED,
    StopReason.CANCELLED: RunStatus.CANCELLED,
    StopReason.ERROR: RunStatus.FAILED,
    StopReason.LLM_API_ERROR: RunStatus.FAILED,
    StopReason.INVALID_LLM_RESPONSE: RunStatus.FAILED,
    StopReason.INVALID_TOOL_CALL: RunStatus.FAILED,
    StopReason.NO_TOOL_CALL: RunStatus.FAILED,
    StopReason.MAX_TOKENS_EXCEEDED: RunStatus.FAILED,
    StopReason.CONTEXT_WINDOW_OVERFLOW: RunStatus.FAILED,
    StopReason.INSUFFICIENT_CREDITS: RunStatus.FAILED,
}


def status_for_stop_reason(stop_reason: str | None) -> RunStatus:
    """The run status a stop reason implies; unknown reasons (newer servers) are failures.

    None (no stop reason yet) means the run is still running, never "done".
    """
    if stop_reason is None:
        return RunStatus.RUNNING
    return STATUS_BY_STOP_REASON.get(stop_reason, RunStatus.FAILED)


def content_text(content: Any) -> str:
    """A message's `content` as text: a string, or the joined `text` of its content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, Mapping) else str(part)
            for part in content
        )
    return str(content)
