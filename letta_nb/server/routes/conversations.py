"""``/v1/conversations``: separate histories on one agent, as Letta 0.16.8 serves them.

CRUD (``agent_id`` in the create's query; list is a bare array, newest first; delete is soft),
messages (a locked send: one run at a time per conversation; the same frames as the agents
endpoint), stream resume (``run_id``, then ``otid``, then the newest active run), cancel and
fork. ``default`` with an ``agent_id`` (or an agent id in place of the conversation id) is the
agent's own history, locked per agent. Where Letta misbehaves (§17.9 of the protocol notes)
this server does not: see ``Engine.send``, ``Engine.resume_target``, ``Engine.cancel_history``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from letta_nb.server import schemas
from letta_nb.server.bodies import (
    ConversationMessage,
    ConversationStream,
    CreateConversation,
    UpdateConversation,
    fields_set,
)
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import is_valid_conversation_id
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import engine, flag, page
from letta_nb.server.routes.messages import answer, send_request
from letta_nb.server.routes.runs import resume_response

router = APIRouter()
CONVERSATION = dict[str, Any]
DEFAULT = "default"
ORDER_BY = ("created_at", "last_message_at", "last_run_completion")


def _valid(conversation_id: str) -> str:
    """Retrieve/update/delete take only a real conversation id (``default`` is a 422 there)."""
    if not is_valid_conversation_id(conversation_id):
        raise RequestValidationError(
            [
                {
                    "type": "string_pattern_mismatch",
                    "loc": ("path", "conversation_id"),
                    "msg": f"expected 'conv-<uuid4>', got {conversation_id[:60]!r}",
                    "input": conversation_id,
                }
            ]
        )
    return conversation_id


async def history_of(
    request: Request, conversation_id: str, agent_id: str | None
) -> tuple[str, str | None]:
    """(agent id, conversation id or None for the agent's default history) of a path:
    ``default`` + ``agent_id``, an agent id (deprecated spelling), or a conversation."""
    eng = engine(request)
    if conversation_id == DEFAULT:
        if not agent_id:
            raise not_found("Conversation", DEFAULT)
        await eng.agent(agent_id)
        return agent_id, None
    if conversation_id.startswith("agent-"):
        await eng.agent(conversation_id)
        return conversation_id, None
    conversation = await eng.conversation(conversation_id)
    return conversation["agent_id"], conversation_id


# -- CRUD ----------------------------------------------------------------------------------------
@router.post("/v1/conversations/", response_model=CONVERSATION)
async def create_conversation(
    request: Request, body: CreateConversation, agent_id: str = Query(...)
) -> Json:
    conversation = await engine(request).create_conversation(
        agent_id, summary=body.summary, model=body.model, model_settings=body.model_settings
    )
    return Json(schemas.conversation_json(conversation))


@router.get("/v1/conversations/", response_model=list[CONVERSATION])
async def list_conversations(request: Request) -> Json:
    q = request.query_params
    order_by = q.get("order_by") or "created_at"
    if order_by not in ORDER_BY:
        raise ApiError(422, f"order_by must be one of {', '.join(ORDER_BY)}")
    if order_by != "created_at" and (q.get("after") or q.get("before")):
        raise ApiError(400, "after/before cursors need order_by=created_at")
    p = await page(request, "conversations", default_order="desc", default_limit=50)
    rows = await engine(request).conversations(
        p,
        agent_id=q.get("agent_id"),
        summary_search=q.get("summary_search"),
        order_by="updated_at" if order_by == "last_run_completion" else order_by,
    )
    return Json([schemas.conversation_json(r) for r in rows])


@router.get("/v1/conversations/{conversation_id}", response_model=CONVERSATION)
async def retrieve_conversation(request: Request, conversation_id: str) -> Json:
    eng = engine(request)
    conversation = await eng.conversation(_valid(conversation_id))
    ids = await eng.history_ids(conversation["agent_id"], conversation_id)
    return Json(schemas.conversation_json(conversation, ids))


@router.patch("/v1/conversations/{conversation_id}", response_model=CONVERSATION)
async def update_conversation(
    request: Request, conversation_id: str, body: UpdateConversation
) -> Json:
    fields = fields_set(body)
    if "last_message_at" in fields:
        fields["last_message_at"] = _timestamp(fields["last_message_at"])
    conversation = await engine(request).update_conversation(_valid(conversation_id), fields)
    return Json(schemas.conversation_json(conversation))


@router.delete("/v1/conversations/{conversation_id}", response_model=None)
async def delete_conversation(request: Request, conversation_id: str) -> Json:
    await engine(request).delete_conversation(_valid(conversation_id))
    return Json(None)


def _timestamp(value: str | None) -> float | None:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, f"last_message_at: not an ISO 8601 date: {value!r}") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# -- messages ------------------------------------------------------------------------------------
@router.post("/v1/conversations/{conversation_id}/messages", response_model=dict[str, Any])
async def send_message(
    request: Request, conversation_id: str, body: ConversationMessage
) -> Response:
    """A locked send (streaming by default, foreground by default): one run at a time."""
    if conversation_id == DEFAULT or conversation_id.startswith("agent-"):
        agent_id, _ = await history_of(request, conversation_id, body.agent_id)
        req = send_request(body, streaming=True, locked=True)
        return await answer(request, agent_id, req)
    req = send_request(body, streaming=True, conversation_id=conversation_id, locked=True)
    return await answer(request, None, req)


@router.get("/v1/conversations/{conversation_id}/messages", response_model=list[dict[str, Any]])
async def list_messages(request: Request, conversation_id: str) -> Json:
    """This history only, oldest-first with ``order=asc`` (default ``desc``)."""
    agent_id = request.query_params.get("agent_id")
    if conversation_id == DEFAULT and not agent_id:
        return Json([])  # as recorded: no agent, no history
    agent_id, history = await history_of(request, conversation_id, agent_id)
    p = await page(request, "messages", default_order="desc", conversation_id=history)
    eng = engine(request)
    if history is None:
        return Json(await eng.messages(p, agent_id=agent_id, default_history=True))
    return Json(await eng.messages(p, history=history))


# -- stream resume, cancel, fork -----------------------------------------------------------------
@router.post("/v1/conversations/{conversation_id}/stream", response_model=dict[str, Any])
async def resume_stream(
    request: Request, conversation_id: str, body: ConversationStream | None = None
) -> StreamingResponse:
    body = body or ConversationStream()
    agent_id, history = await history_of(request, conversation_id, body.agent_id)
    row = await engine(request).resume_target(agent_id, history, run_id=body.run_id, otid=body.otid)
    return resume_response(request, row, body)


@router.post("/v1/conversations/{conversation_id}/cancel", response_model=dict[str, Any])
async def cancel(request: Request, conversation_id: str) -> Json:
    agent_id, history = await history_of(
        request, conversation_id, request.query_params.get("agent_id")
    )
    return Json(await engine(request).cancel_history(agent_id, history))


@router.post("/v1/conversations/{conversation_id}/fork", response_model=CONVERSATION)
async def fork(request: Request, conversation_id: str) -> Json:
    """A new conversation sharing the source's messages (up to ``message_id`` when given,
    which Letta 0.16.8 ignores); ``hidden`` keeps it out of listings."""
    q = request.query_params
    agent_id, history = await history_of(request, conversation_id, q.get("agent_id"))
    conversation = await engine(request).create_conversation(
        agent_id,
        fork_of=(history, q.get("message_id") or None),
        hidden=flag(q.get("hidden"), False),
    )
    return Json(schemas.conversation_json(conversation))
