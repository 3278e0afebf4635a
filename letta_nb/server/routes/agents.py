"""``/v1/agents``: create, list, retrieve (with pending approval), delete, and agent tools."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from letta_nb.server import schemas
from letta_nb.server.bodies import ApprovalToggle, CreateAgent
from letta_nb.server.brains.registry import resolve
from letta_nb.server.errors import ApiError
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import engine, flag, page

router = APIRouter()
_TOOL_NS = uuid.UUID("2f1d6d59-7d3c-4d55-9a49-3b7c86b7a1d1")
AGENT = dict[str, Any]
CONFIG_KEYS = (
    "memory_blocks",
    "tool_ids",
    "tools",
    "system",
    "agent_type",
    "description",
    "metadata",
    "tags",
    "embedding",
)


def _brain_tool(name: str) -> dict[str, Any]:
    """A brain's built-in tool shown as a Letta Tool (stable id derived from its name)."""
    return {
        "id": f"tool-{uuid.uuid5(_TOOL_NS, name)}",
        "name": name,
        "tool_type": "letta_core",
        "description": f"Built-in tool {name} of the demo brain.",
        "source_code": None,
    }


async def agent_tools(request: Request, agent: dict[str, Any]) -> list[dict[str, Any]]:
    eng = engine(request)
    brain = eng.brains.get(agent["model"])
    out = [_brain_tool(name) for name in brain.tools] if brain is not None else []
    seen = {t["name"] for t in out}
    out.extend(t for t in await eng.agent_tools(agent) if t["name"] not in seen)
    return out


async def agent_state(request: Request, agent: dict[str, Any], *, with_pending: bool) -> AGENT:
    pending = await engine(request).pending_approval(agent) if with_pending else None
    tools = [schemas.tool_json(t) for t in await agent_tools(request, agent)]
    return schemas.agent_json(
        agent, tools, pending_approval=pending, last_stop_reason=agent["last_stop_reason"]
    )


def _includes(request: Request) -> set[str]:
    values = request.query_params.getlist("include") + request.query_params.getlist("include[]")
    return {v for value in values for v in value.split(",")}


@router.post("/v1/agents/", response_model=AGENT)
async def create_agent(request: Request, body: CreateAgent) -> Json:
    eng = engine(request)
    requested = body.model or (body.llm_config.handle if body.llm_config else None)
    handle = resolve(eng.brains, requested)
    if handle is None:
        offered = ", ".join(eng.brains) or "none"
        raise ApiError(404, f"Model handle {requested!r} not found; this server offers: {offered}")
    config: dict[str, Any] = {key: getattr(body, key) for key in CONFIG_KEYS}
    config["tool_rules"] = [
        {"tool_name": r.tool_name, "type": r.type, "prompt_template": r.prompt_template}
        for r in body.tool_rules or []
    ]
    agent = await eng.create_agent(body.name or f"agent-{int(time.time())}", handle, config)
    return Json(await agent_state(request, agent, with_pending=False))


@router.get("/v1/agents/", response_model=list[AGENT])
async def list_agents(request: Request) -> Json:
    p = await page(request, "agents", default_order="desc", default_limit=50)
    agents = await engine(request).agents(p, request.query_params.get("name"))
    return Json([await agent_state(request, a, with_pending=False) for a in agents])


@router.get("/v1/agents/{agent_id}", response_model=AGENT)
async def retrieve_agent(request: Request, agent_id: str) -> Json:
    agent = await engine(request).agent(agent_id)
    with_pending = "agent.pending_approval" in _includes(request)
    return Json(await agent_state(request, agent, with_pending=with_pending))


@router.delete("/v1/agents/{agent_id}", response_model=dict[str, Any])
async def delete_agent(request: Request, agent_id: str) -> Json:
    await engine(request).delete_agent(agent_id)
    return Json({})


@router.get("/v1/agents/{agent_id}/tools", response_model=list[AGENT])
async def list_agent_tools(request: Request, agent_id: str) -> Json:
    agent = await engine(request).agent(agent_id)
    return Json([schemas.tool_json(t) for t in await agent_tools(request, agent)])


@router.patch("/v1/agents/{agent_id}/tools/attach/{tool_id}", response_model=AGENT)
async def attach_tool(request: Request, agent_id: str, tool_id: str) -> Json:
    eng = engine(request)
    agent = await eng.agent(agent_id)
    await eng.tool(tool_id)
    config = agent["config"]
    ids = list(config.get("tool_ids") or [])
    if tool_id not in ids:
        ids.append(tool_id)
    agent = await eng.update_agent_config(agent_id, {**config, "tool_ids": ids})
    return Json(await agent_state(request, agent, with_pending=False))


@router.patch("/v1/agents/{agent_id}/tools/detach/{tool_id}", response_model=AGENT)
async def detach_tool(request: Request, agent_id: str, tool_id: str) -> Json:
    eng = engine(request)
    agent = await eng.agent(agent_id)
    config = agent["config"]
    ids = [t for t in config.get("tool_ids") or [] if t != tool_id]
    agent = await eng.update_agent_config(agent_id, {**config, "tool_ids": ids})
    return Json(await agent_state(request, agent, with_pending=False))


@router.patch("/v1/agents/{agent_id}/tools/approval/{tool_name}", response_model=AGENT)
async def update_approval(
    request: Request,
    agent_id: str,
    tool_name: str,
    body: ApprovalToggle | None = None,
    requires_approval: str | None = Query(None),
) -> Json:
    """Toggle ``requires_approval`` for one tool of one agent (body or query, as the SDK allows)."""
    eng = engine(request)
    agent = await eng.agent(agent_id)
    value = body.requires_approval if body is not None else None
    if value is None and requires_approval is None:
        raise ApiError(422, "requires_approval is required")
    required = value if value is not None else flag(requires_approval, False)
    config = agent["config"]
    overrides = dict(config.get("approval_overrides") or {})
    overrides[tool_name] = required
    rules = [
        r
        for r in config.get("tool_rules") or []
        if not (r.get("type") == "requires_approval" and r.get("tool_name") == tool_name)
    ]
    if required:
        rules.append({"tool_name": tool_name, "type": "requires_approval", "prompt_template": None})
    agent = await eng.update_agent_config(
        agent_id, {**config, "approval_overrides": overrides, "tool_rules": rules}
    )
    return Json(await agent_state(request, agent, with_pending=False))
