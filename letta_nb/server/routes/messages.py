"""``/v1/agents/{id}/messages``: send (JSON, foreground or background stream), list, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from letta_nb.server import schemas
from letta_nb.server.bodies import CancelRuns, SendMessage
from letta_nb.server.engine import SendRequest
from letta_nb.server.errors import ApiError
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import engine, page
from letta_nb.server.storage import Page
from letta_nb.server.turns import parse_turn

router = APIRouter()
HIDDEN_IN_RESPONSE = frozenset({"user_message", "approval_response_message"})
DEFAULT_MAX_STEPS = 50
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"


def sse(body: Any) -> StreamingResponse:
    return StreamingResponse(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


def send_request(
    body: SendMessage,
    *,
    streaming: bool,
    conversation_id: str | None = None,
    locked: bool = False,
) -> SendRequest:
    """The validated request of a send body; ``streaming`` is the endpoint's default (false
    on the agents endpoint, true on the conversations one) unless the body says."""
    streaming = streaming if body.streaming is None else body.streaming
    background = bool(body.background)
    if background and not streaming:
        raise ApiError(
            422,
            "Streaming options set without streaming enabled. background can only "
            "be true when streaming=true. Either set streaming=true or use default "
            "values for streaming options.",
        )
    return SendRequest(
        turn=parse_turn(body),
        streaming=streaming,
        background=background,
        include_pings=True if body.include_pings is None else body.include_pings,
        stream_tokens=bool(body.stream_tokens),
        max_steps=body.max_steps or DEFAULT_MAX_STEPS,
        conversation_id=conversation_id,
        locked=locked,
    )


async def answer(request: Request, agent_id: str | None, req: SendRequest) -> Response:
    """Start the run and answer as Letta does: the stored stream of a background run (from
    seq 1, also for a re-attached otid), the pipe of a foreground one, or a LettaResponse."""
    eng = engine(request)
    started = await eng.send(agent_id, req)
    if started.reattached or (req.streaming and req.background):
        return sse(eng.stream(started.run_id, 0, include_pings=req.include_pings))
    assert started.run is not None
    if req.streaming:
        return sse(eng.foreground(started.run, include_pings=req.include_pings))
    await eng.wait(started.run)
    return await _letta_response(request, started.run_id)


async def _send(request: Request, agent_id: str, body: SendMessage, *, force: bool) -> Response:
    req = send_request(body, streaming=force or bool(body.streaming))
    return await answer(request, agent_id, req)


async def _letta_response(request: Request, run_id: str) -> Response:
    eng = engine(request)
    row = await eng.run(run_id)
    assert row is not None
    if row["status"] == "failed":
        raise ApiError(502, row["metadata"].get("error"), retry=False)
    stored = await eng.messages(Page("asc", None, None, 1000), run_id=run_id)
    messages = [m for m in stored if m["message_type"] not in HIDDEN_IN_RESPONSE]
    usage = schemas.usage_frame(
        row["usage"]
        or {"completion_tokens": 0, "prompt_tokens": 0, "total_tokens": 0, "step_count": 0}
    )
    usage.update(cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0)
    return Json(
        {
            "messages": messages,
            "stop_reason": schemas.stop_reason_frame(row["stop_reason"]),
            "usage": usage,
            "logprobs": None,
            "turns": None,
        }
    )


@router.post("/v1/agents/{agent_id}/messages", response_model=dict[str, Any])
async def send_message(request: Request, agent_id: str, body: SendMessage) -> Response:
    return await _send(request, agent_id, body, force=False)


@router.post("/v1/agents/{agent_id}/messages/stream", response_model=dict[str, Any])
async def send_message_stream(request: Request, agent_id: str, body: SendMessage) -> Response:
    """Deprecated alias: always streams."""
    return await _send(request, agent_id, body, force=True)


@router.get("/v1/agents/{agent_id}/messages", response_model=list[dict[str, Any]])
async def list_messages(request: Request, agent_id: str) -> Json:
    eng = engine(request)
    await eng.agent(agent_id)
    p = await page(request, "messages", default_order="desc")
    return Json(await eng.messages(p, agent_id=agent_id))


@router.post("/v1/agents/{agent_id}/messages/cancel", response_model=dict[str, Any])
async def cancel(request: Request, agent_id: str, body: CancelRuns | None = None) -> Json:
    """Cancel the given runs, or every active run of the agent plus one awaiting approval."""
    run_ids = body.run_ids if body is not None else None
    return Json(await engine(request).cancel(agent_id, run_ids))
