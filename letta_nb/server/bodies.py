"""Request bodies as pydantic models: FastAPI validates them (a wrong type is a 422 with
Letta's ``{"detail": "..."}`` body, never a 500) and documents them in ``/openapi.json``.

Types are strict (JSON ``true`` is not an integer, ``"yes"`` is not a boolean). Unknown fields
are accepted and ignored, as Letta accepts the many options this server does not implement.
Sizes, nesting depth and unpaired surrogates are checked before parsing (``guard.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Content = StrictStr | list[dict[str, Any]]


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class LlmConfig(Body):
    handle: StrictStr | None = None


class ToolRule(Body):
    tool_name: StrictStr | None = None
    type: StrictStr | None = None
    prompt_template: StrictStr | None = None


class CreateAgent(Body):
    name: StrictStr | None = None
    model: StrictStr | None = Field(None, description="model handle, e.g. letta_nb/demo")
    llm_config: LlmConfig | None = None
    embedding: StrictStr | None = None
    system: StrictStr | None = None
    agent_type: StrictStr | None = None
    description: StrictStr | None = None
    metadata: dict[str, Any] | None = None
    tags: list[StrictStr] | None = None
    tool_ids: list[StrictStr] | None = None
    tools: list[StrictStr] | None = None
    tool_rules: list[ToolRule] | None = None
    memory_blocks: list[dict[str, Any]] | None = None


class ApprovalItem(Body):
    """One answer: ``{"type":"approval","approve":…}`` or a client result ``{"type":"tool"}``."""

    type: StrictStr | None = None
    tool_call_id: StrictStr
    approve: StrictBool | None = None
    reason: StrictStr | None = None
    tool_return: Content | None = None
    status: StrictStr | None = None


class ToolReturnItem(Body):
    tool_call_id: StrictStr
    status: StrictStr | None = None
    tool_return: Content | None = None


class MessageItem(Body):
    """A user message, an approval (list or legacy form) or client tool returns."""

    type: Literal["message", "approval", "tool_return"] | None = None
    role: StrictStr | None = None
    content: Content | None = None
    otid: StrictStr | None = None
    approvals: list[ApprovalItem] | None = None
    approve: StrictBool | None = None
    approval_request_id: StrictStr | None = None
    reason: StrictStr | None = None
    tool_returns: list[ToolReturnItem] | None = None


class SendMessage(Body):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"anyOf": [{"required": ["messages"]}, {"required": ["input"]}]},
    )

    messages: Annotated[list[MessageItem], Field(min_length=1)] = None  # type: ignore[assignment]
    input: Content = None  # type: ignore[assignment]
    streaming: StrictBool | None = None
    background: StrictBool | None = None
    stream_tokens: StrictBool | None = None
    include_pings: StrictBool | None = None
    max_steps: StrictInt | None = None
    otid: StrictStr | None = None
    use_assistant_message: StrictBool | None = None
    include_return_message_types: list[StrictStr] | None = None


class ConversationMessage(SendMessage):
    """``/v1/conversations/{id}/messages``: the agents-endpoint body plus ``agent_id`` (the
    default path only)."""

    agent_id: StrictStr | None = None


class ResumeStream(Body):
    starting_after: StrictInt | None = None
    batch_size: StrictInt | None = None
    include_pings: StrictBool | None = None
    poll_interval: StrictFloat | StrictInt | None = None


class ConversationStream(ResumeStream):
    """``/v1/conversations/{id}/stream``: which run (``run_id``, else ``otid``, else the newest
    active one) and where to start."""

    run_id: StrictStr | None = None
    otid: StrictStr | None = None
    agent_id: StrictStr | None = None


class CreateConversation(Body):
    summary: StrictStr | None = None
    model: StrictStr | None = None
    model_settings: dict[str, Any] | None = None
    isolated_block_labels: list[StrictStr] | None = None


class UpdateConversation(Body):
    """``archived`` and ``description`` (sent by the SDK) are accepted and ignored, as Letta."""

    summary: StrictStr | None = None
    model: StrictStr | None = None
    model_settings: dict[str, Any] | None = None
    last_message_at: StrictStr | None = None


class CancelRuns(Body):
    run_ids: list[StrictStr] | None = None


class ToolPatch(Body):
    source_code: StrictStr | None = None
    description: StrictStr | None = None
    tags: list[StrictStr] | None = None
    json_schema: dict[str, Any] | None = None
    default_requires_approval: StrictBool | None = None
    source_type: StrictStr | None = None


class ToolCreate(ToolPatch):
    source_code: Annotated[StrictStr, Field(min_length=1)]


class ApprovalToggle(Body):
    requires_approval: StrictBool | None = None


def fields_set(body: BaseModel) -> dict[str, Any]:
    """The fields the client sent (declared ones only), as plain JSON values."""
    return body.model_dump(include=set(body.model_fields_set) & set(type(body).model_fields))
