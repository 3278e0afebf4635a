"""``/v1/runs``: list (correct cursors), retrieve, resume stream, messages, usage, steps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from letta_nb.protocol import ACTIVE_RUN_STATUSES
from letta_nb.server import schemas
from letta_nb.server.bodies import ResumeStream
from letta_nb.server.engine.engine import NOT_BACKGROUND
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import is_valid_run_id
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import config, engine, flag, page
from letta_nb.server.routes.messages import sse

router = APIRouter()
MAX_SEQ = 2**62


async def _require_run(request: Request, run_id: str) -> dict[str, Any]:
    if not is_valid_run_id(run_id):
        raise ApiError(
            400,
            f"INVALID_ARGUMENT: Invalid run ID format: {run_id}. Expected format: 'run-<uuid4>'",
        )
    row = await engine(request).run(run_id)
    if row is None:
        raise not_found("Run", run_id)
    return row


async def _list(request: Request, *, statuses: list[str], default_limit: int) -> Json:
    q = request.query_params
    agent_ids = q.getlist("agent_id") + q.getlist("agent_ids")
    background = q.get("background")
    p = await page(request, "runs", default_order="desc", default_limit=default_limit)
    rows = await engine(request).runs(
        p,
        agent_ids=agent_ids,
        statuses=statuses,
        background=None if background is None else flag(background, False),
        stop_reason=q.get("stop_reason"),
        conversation_id=q.get("conversation_id"),
    )
    return Json([schemas.run_json(r) for r in rows])


@router.get("/v1/runs/", response_model=list[dict[str, Any]])
async def list_runs(request: Request) -> Json:
    q = request.query_params
    statuses = q.getlist("statuses")
    if flag(q.get("active"), False):
        statuses = (
            [s for s in statuses if s in ACTIVE_RUN_STATUSES]
            if statuses
            else list(ACTIVE_RUN_STATUSES)
        )
        if not statuses:
            return Json([])
    return await _list(request, statuses=statuses, default_limit=100)


@router.get("/v1/runs/active", response_model=list[dict[str, Any]])
async def list_active_runs(request: Request) -> Json:
    """Deprecated alias kept because the real server still serves it."""
    return await _list(request, statuses=list(ACTIVE_RUN_STATUSES), default_limit=100)


@router.get("/v1/runs/{run_id}", response_model=dict[str, Any])
async def retrieve_run(request: Request, run_id: str) -> Json:
    return Json(schemas.run_json(await _require_run(request, run_id)))


@router.post("/v1/runs/{run_id}/stream", response_model=dict[str, Any])
async def resume_stream(
    request: Request, run_id: str, body: ResumeStream | None = None
) -> StreamingResponse:
    """Replay frames after ``starting_after`` and tail until the end; never hangs on a done run."""
    return resume_response(request, await _require_run(request, run_id), body or ResumeStream())


def resume_response(request: Request, row: dict[str, Any], body: ResumeStream) -> StreamingResponse:
    """A background run's stream after ``body.starting_after`` (the runs and conversations
    resume routes): 400 for a foreground run, 410 past the retention."""
    eng = engine(request)
    if not row["background"]:
        raise ApiError(400, NOT_BACKGROUND)
    if not eng.within_retention(row):
        hours = config(request).retention_seconds / 3600
        raise ApiError(
            410, f"EXPIRED: Run was created more than {hours:g} hours ago, and is now expired."
        )
    # Clamp into SQLite's integer range: past the end is simply the end (never a 500).
    starting_after = min(max(0, body.starting_after or 0), MAX_SEQ)
    include_pings = True if body.include_pings is None else body.include_pings
    return sse(eng.stream(row["id"], starting_after, include_pings=include_pings))


@router.get("/v1/runs/{run_id}/messages", response_model=list[dict[str, Any]])
async def run_messages(request: Request, run_id: str) -> Json:
    await _require_run(request, run_id)
    p = await page(request, "messages", default_order="asc")
    return Json(await engine(request).messages(p, run_id=run_id))


@router.get("/v1/runs/{run_id}/usage", response_model=dict[str, Any])
async def run_usage(request: Request, run_id: str) -> Json:
    usage = (await _require_run(request, run_id))["usage"] or {}
    return Json(
        {
            "completion_tokens": usage.get("completion_tokens", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
    )


@router.get("/v1/runs/{run_id}/steps", response_model=list[dict[str, Any]])
async def run_steps(request: Request, run_id: str) -> Json:
    eng = engine(request)
    run = await _require_run(request, run_id)
    try:
        agent = await eng.agent(run["agent_id"])
        model = agent["model"]
    except ApiError:
        model = "letta_nb/unknown"
    p = await page(request, "steps", default_order="desc")
    return Json([schemas.step_json(s, model) for s in await eng.steps(p, run_id)])
