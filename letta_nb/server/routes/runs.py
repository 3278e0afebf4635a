"""``/v1/runs``: list (correct cursors), retrieve, resume stream, messages, usage, steps."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from letta_nb.protocol import ACTIVE_RUN_STATUSES
from letta_nb.server import schemas
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import is_valid_run_id
from letta_nb.server.routes.common import check_body, config, engine, flag, json_body, page
from letta_nb.server.sse import SSE_HEADERS, SSE_MEDIA_TYPE, read_run

router = APIRouter()
MAX_SEQ = 2**62


def _require_run(request: Request, run_id: str) -> dict[str, Any]:
    if not is_valid_run_id(run_id):
        raise ApiError(
            400,
            f"INVALID_ARGUMENT: Invalid run ID format: {run_id}. Expected format: 'run-<uuid4>'",
        )
    row = engine(request).store.get_run(run_id)
    if row is None:
        raise not_found("Run", run_id)
    return row


def _list(request: Request, *, statuses: list[str], default_limit: int) -> list[dict[str, Any]]:
    q = request.query_params
    agent_ids = q.getlist("agent_id") + q.getlist("agent_ids")
    background = q.get("background")
    p = page(request, "runs", default_order="desc", default_limit=default_limit)
    rows = engine(request).store.list_runs(
        p,
        agent_ids=agent_ids,
        statuses=statuses,
        background=None if background is None else flag(background, False),
        stop_reason=q.get("stop_reason"),
    )
    return [schemas.run_json(r) for r in rows]


@router.get("/v1/runs/")
async def list_runs(request: Request) -> list[dict[str, Any]]:
    q = request.query_params
    statuses = q.getlist("statuses")
    if flag(q.get("active"), False):
        statuses = (
            [s for s in statuses if s in ACTIVE_RUN_STATUSES]
            if statuses
            else list(ACTIVE_RUN_STATUSES)
        )
        if not statuses:
            return []
    return _list(request, statuses=statuses, default_limit=100)


@router.get("/v1/runs/active")
async def list_active_runs(request: Request) -> list[dict[str, Any]]:
    """Deprecated alias kept because the real server still serves it."""
    return _list(request, statuses=list(ACTIVE_RUN_STATUSES), default_limit=100)


@router.get("/v1/runs/{run_id}")
async def retrieve_run(request: Request, run_id: str) -> dict[str, Any]:
    return schemas.run_json(_require_run(request, run_id))


@router.post("/v1/runs/{run_id}/stream")
async def resume_stream(request: Request, run_id: str) -> StreamingResponse:
    """Replay frames after ``starting_after`` and tail until the end; never hangs on a done run."""
    cfg = config(request)
    body = check_body(await json_body(request), "post", "/v1/runs/{run_id}/stream")
    row = _require_run(request, run_id)
    if not row["background"]:
        raise ApiError(
            400,
            "INVALID_ARGUMENT: Run was not created in background mode, so it cannot be retrieved.",
        )
    if time.time() - row["created_at"] > cfg.retention_seconds:
        hours = cfg.retention_seconds / 3600
        raise ApiError(
            410, f"EXPIRED: Run was created more than {hours:g} hours ago, and is now expired."
        )
    try:
        starting_after = int(body.get("starting_after") or 0)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ApiError(422, "starting_after must be an integer") from exc
    # Clamp into SQLite's integer range: past the end is simply the end (never a 500).
    starting_after = min(max(0, starting_after), MAX_SEQ)
    stream = read_run(
        engine(request),
        run_id,
        starting_after,
        include_pings=flag(body.get("include_pings"), True),
        keepalive=cfg.keepalive_interval,
    )
    return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


@router.get("/v1/runs/{run_id}/messages")
async def run_messages(request: Request, run_id: str) -> list[dict[str, Any]]:
    _require_run(request, run_id)
    p = page(request, "messages", default_order="asc")
    return engine(request).store.list_messages(p, run_id=run_id)


@router.get("/v1/runs/{run_id}/usage")
async def run_usage(request: Request, run_id: str) -> dict[str, Any]:
    usage = _require_run(request, run_id)["usage"] or {}
    return {
        "completion_tokens": usage.get("completion_tokens", 0),
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


@router.get("/v1/runs/{run_id}/steps")
async def run_steps(request: Request, run_id: str) -> list[dict[str, Any]]:
    run = _require_run(request, run_id)
    agent = engine(request).store.get_agent(run["agent_id"])
    model = agent["model"] if agent else "letta_nb/unknown"
    p = page(request, "steps", default_order="desc")
    return [schemas.step_json(s, model) for s in engine(request).store.list_steps(p, run_id)]
