"""``/v1/agents/{id}/messages``: send (JSON, foreground or background stream), list, cancel."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from letta_nb.server import schemas
from letta_nb.server.errors import ApiError
from letta_nb.server.routes.common import (
    check_body,
    config,
    engine,
    flag,
    json_body,
    page,
    require_agent,
)
from letta_nb.server.runner import PENDING_MESSAGE
from letta_nb.server.sse import SSE_HEADERS, SSE_MEDIA_TYPE, read_foreground, read_run
from letta_nb.server.storage import Page
from letta_nb.server.turns import TurnRequest, parse_turn

router = APIRouter()
HIDDEN_IN_RESPONSE = frozenset({"user_message", "approval_response_message"})
DEFAULT_MAX_STEPS = 50


def otid_key(otids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(otids)).encode()).hexdigest()[:32]


def _check_approval(
    turn: TurnRequest, pending: dict[str, Any] | None, streaming: bool
) -> tuple[str, str, str] | None:
    """Validate an approval answer; a mismatch fails the run (streaming) or is a 400."""
    if pending is None:
        raise ApiError(
            400,
            "Cannot process approval response: No tool call is currently "
            "awaiting approval (it may already have been answered).",
        )
    for d in turn.decisions:
        if d.legacy_request_id is not None and not d.tool_call_id:
            d.tool_call_id = pending["tool_call_id"]
    expected = [pending["tool_call_id"]]
    received = sorted(d.tool_call_id for d in turn.decisions)
    if received == expected:
        return None
    detail = f"Invalid tool call IDs. Expected '{expected}', but received '{received}'."
    if not streaming:
        raise ApiError(400, detail)
    return ("internal_error", "An unknown error occurred with the LLM streaming request.", detail)


async def _send(request: Request, agent_id: str, *, force_streaming: bool) -> Response:
    eng = engine(request)
    cfg = config(request)
    body = check_body(await json_body(request), "post", "/v1/agents/{agent_id}/messages")
    agent = require_agent(request, agent_id)
    streaming = force_streaming or flag(body.get("streaming"), False)
    background = flag(body.get("background"), False)
    if background and not streaming:
        raise ApiError(
            422,
            "Streaming options set without streaming enabled. background can only "
            "be true when streaming=true. Either set streaming=true or use default "
            "values for streaming options.",
        )
    include_pings = flag(body.get("include_pings"), True)
    turn = parse_turn(body)
    key = otid_key(turn.otids) if background and turn.otids and not turn.is_approval else None
    if key is not None:
        existing = eng.store.run_by_otid(agent_id, key)
        if existing and time.time() - existing["created_at"] <= cfg.retention_seconds:
            return _stream(
                read_run(
                    eng,
                    existing["id"],
                    0,
                    include_pings=include_pings,
                    keepalive=cfg.keepalive_interval,
                )
            )
    pending = agent["pending"]
    failure = None
    if turn.is_approval:
        failure = _check_approval(turn, pending, streaming)
    elif pending is not None:
        if not streaming:
            raise ApiError(
                409,
                {
                    "code": "PENDING_APPROVAL",
                    "message": PENDING_MESSAGE,
                    "pending_request_id": pending["message"]["id"],
                },
                retry=False,
            )
        failure = ("internal_error", PENDING_MESSAGE, PENDING_MESSAGE)
    if agent["model"] not in eng.brains:
        raise ApiError(400, f"Model {agent['model']!r} is not available on this server.")
    try:
        max_steps = int(body.get("max_steps") or DEFAULT_MAX_STEPS)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ApiError(422, "max_steps must be an integer") from exc
    run = eng.start(
        agent,
        turn,
        background=background,
        streaming=streaming,
        include_pings=include_pings,
        stream_tokens=flag(body.get("stream_tokens"), False),
        max_steps=max(1, max_steps),
        otid_key=key,
        failure=failure,
    )
    if streaming and background:
        return _stream(
            read_run(eng, run.id, 0, include_pings=include_pings, keepalive=cfg.keepalive_interval)
        )
    if streaming:
        return _stream(
            read_foreground(run, include_pings=include_pings, keepalive=cfg.keepalive_interval)
        )
    await run.finished.wait()
    return _letta_response(request, run.id)


def _stream(body: Any) -> StreamingResponse:
    return StreamingResponse(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


def _letta_response(request: Request, run_id: str) -> Response:
    eng = engine(request)
    row = eng.store.get_run(run_id)
    assert row is not None
    if row["status"] == "failed":
        raise ApiError(502, row["metadata"].get("error"), retry=False)
    messages = [
        m
        for m in eng.store.list_messages(Page("asc", None, None, 1000), run_id=run_id)
        if m["message_type"] not in HIDDEN_IN_RESPONSE
    ]
    usage = schemas.usage_frame(
        row["usage"]
        or {"completion_tokens": 0, "prompt_tokens": 0, "total_tokens": 0, "step_count": 0}
    )
    usage.update(cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0)
    return JSONResponse(
        {
            "messages": messages,
            "stop_reason": schemas.stop_reason_frame(row["stop_reason"]),
            "usage": usage,
            "logprobs": None,
            "turns": None,
        }
    )


@router.post("/v1/agents/{agent_id}/messages")
async def send_message(request: Request, agent_id: str) -> Response:
    return await _send(request, agent_id, force_streaming=False)


@router.post("/v1/agents/{agent_id}/messages/stream")
async def send_message_stream(request: Request, agent_id: str) -> Response:
    """Deprecated alias: always streams."""
    return await _send(request, agent_id, force_streaming=True)


@router.get("/v1/agents/{agent_id}/messages")
async def list_messages(request: Request, agent_id: str) -> list[dict[str, Any]]:
    require_agent(request, agent_id)
    p = page(request, "messages", default_order="desc")
    return engine(request).store.list_messages(p, agent_id=agent_id)


@router.post("/v1/agents/{agent_id}/messages/cancel")
async def cancel(request: Request, agent_id: str) -> dict[str, Any]:
    """Cancel the given runs, or every active run of the agent plus one awaiting approval."""
    eng = engine(request)
    agent = require_agent(request, agent_id)
    body = check_body(await json_body(request), "post", "/v1/agents/{agent_id}/messages/cancel")
    run_ids = body.get("run_ids")
    if not run_ids:
        run_ids = [r.id for r in eng.live.values() if r.agent_id == agent_id]
        if agent["pending"]:
            run_ids.append(agent["pending"]["run_id"])
    out: dict[str, Any] = {}
    for run_id in run_ids:
        row = eng.store.get_run(run_id)
        if row is not None and row["agent_id"] != agent_id:
            out[run_id] = "failed"
            continue
        out[run_id] = await eng.cancel(run_id)
    return out
