"""``/v1/agents``: create, list, retrieve (with pending approval), delete, and agent tools."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server import schemas
from letta_nb.server.brains.registry import resolve
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import new_id
from letta_nb.server.routes.common import check_body, engine, flag, json_body, page, require_agent

router = APIRouter()
_TOOL_NS = uuid.UUID("2f1d6d59-7d3c-4d55-9a49-3b7c86b7a1d1")


def _brain_tool(name: str) -> dict[str, Any]:
    """A brain's built-in tool shown as a Letta Tool (stable id derived from its name)."""
    return {
        "id": f"tool-{uuid.uuid5(_TOOL_NS, name)}",
        "name": name,
        "tool_type": "letta_core",
        "description": f"Built-in tool {name} of the demo brain.",
        "source_code": None,
    }


def agent_tools(request: Request, agent: dict[str, Any]) -> list[dict[str, Any]]:
    eng = engine(request)
    out: list[dict[str, Any]] = []
    brain = eng.brains.get(agent["model"])
    if brain is not None:
        out.extend(_brain_tool(name) for name in brain.tools)
    seen = {t["name"] for t in out}
    for tool_id in agent["config"].get("tool_ids") or []:
        tool = eng.store.get_tool(tool_id)
        if tool is not None and tool["name"] not in seen:
            out.append(tool)
            seen.add(tool["name"])
    for name in agent["config"].get("tools") or []:
        tool = eng.store.tool_by_name(name)
        if tool is not None and tool["name"] not in seen:
            out.append(tool)
            seen.add(tool["name"])
    return out


def agent_state(request: Request, agent: dict[str, Any], *, with_pending: bool) -> dict[str, Any]:
    pending = agent["pending"]["message"] if with_pending and agent["pending"] else None
    tools = [schemas.tool_json(t) for t in agent_tools(request, agent)]
    return schemas.agent_json(
        agent, tools, pending_approval=pending, last_stop_reason=agent["last_stop_reason"]
    )


def _includes(request: Request) -> set[str]:
    values = request.query_params.getlist("include") + request.query_params.getlist("include[]")
    return {v for value in values for v in value.split(",")}


@router.post("/v1/agents/")
async def create_agent(request: Request) -> dict[str, Any]:
    eng = engine(request)
    body = check_body(await json_body(request), "post", "/v1/agents/")
    requested = body.get("model") or (body.get("llm_config") or {}).get("handle")
    if requested is not None and not isinstance(requested, str):
        raise ApiError(422, "llm_config.handle must be a string")
    handle = resolve(eng.brains, requested)
    if handle is None:
        offered = ", ".join(eng.brains) or "none"
        raise ApiError(400, f"Unknown model handle {requested!r}; this server offers: {offered}")
    for tool_id in body.get("tool_ids") or []:
        if eng.store.get_tool(tool_id) is None:
            raise not_found("Tool", tool_id)
    agent_id = new_id("agent")
    config = {
        key: body.get(key)
        for key in (
            "memory_blocks",
            "tool_ids",
            "tools",
            "tool_rules",
            "system",
            "agent_type",
            "description",
            "metadata",
            "tags",
            "embedding",
        )
    }
    config["tool_rules"] = [
        {
            "tool_name": r.get("tool_name"),
            "type": r.get("type"),
            "prompt_template": r.get("prompt_template"),
        }
        for r in body.get("tool_rules") or []
    ]
    eng.store.insert_agent(
        agent_id, body.get("name") or f"agent-{int(time.time())}", handle, config
    )
    return agent_state(request, require_agent(request, agent_id), with_pending=False)


@router.get("/v1/agents/")
async def list_agents(request: Request) -> list[dict[str, Any]]:
    p = page(request, "agents", default_order="desc", default_limit=50)
    agents = engine(request).store.list_agents(p, request.query_params.get("name"))
    return [agent_state(request, a, with_pending=False) for a in agents]


@router.get("/v1/agents/{agent_id}")
async def retrieve_agent(request: Request, agent_id: str) -> dict[str, Any]:
    agent = require_agent(request, agent_id)
    with_pending = "agent.pending_approval" in _includes(request)
    return agent_state(request, agent, with_pending=with_pending)


@router.delete("/v1/agents/{agent_id}")
async def delete_agent(request: Request, agent_id: str) -> dict[str, Any]:
    eng = engine(request)
    require_agent(request, agent_id)
    for run in [r for r in eng.live.values() if r.agent_id == agent_id]:
        await eng.cancel(run.id)
    eng.store.delete_agent(agent_id)
    return {}


@router.get("/v1/agents/{agent_id}/tools")
async def list_agent_tools(request: Request, agent_id: str) -> list[dict[str, Any]]:
    agent = require_agent(request, agent_id)
    return [schemas.tool_json(t) for t in agent_tools(request, agent)]


@router.patch("/v1/agents/{agent_id}/tools/attach/{tool_id}")
async def attach_tool(request: Request, agent_id: str, tool_id: str) -> dict[str, Any]:
    eng = engine(request)
    agent = require_agent(request, agent_id)
    if eng.store.get_tool(tool_id) is None:
        raise not_found("Tool", tool_id)
    config = agent["config"]
    ids = list(config.get("tool_ids") or [])
    if tool_id not in ids:
        ids.append(tool_id)
    eng.store.update_agent(agent_id, config={**config, "tool_ids": ids})
    return agent_state(request, require_agent(request, agent_id), with_pending=False)


@router.patch("/v1/agents/{agent_id}/tools/detach/{tool_id}")
async def detach_tool(request: Request, agent_id: str, tool_id: str) -> dict[str, Any]:
    eng = engine(request)
    agent = require_agent(request, agent_id)
    config = agent["config"]
    ids = [t for t in config.get("tool_ids") or [] if t != tool_id]
    eng.store.update_agent(agent_id, config={**config, "tool_ids": ids})
    return agent_state(request, require_agent(request, agent_id), with_pending=False)


@router.patch("/v1/agents/{agent_id}/tools/approval/{tool_name}")
async def update_approval(request: Request, agent_id: str, tool_name: str) -> dict[str, Any]:
    """Toggle ``requires_approval`` for one tool of one agent (body or query, as the SDK allows)."""
    eng = engine(request)
    agent = require_agent(request, agent_id)
    body = await json_body(request)
    value = body.get("requires_approval", request.query_params.get("requires_approval"))
    if value is None:
        raise ApiError(422, "requires_approval is required")
    required = flag(value, False)
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
    eng.store.update_agent(
        agent_id, config={**config, "approval_overrides": overrides, "tool_rules": rules}
    )
    return agent_state(request, require_agent(request, agent_id), with_pending=False)
