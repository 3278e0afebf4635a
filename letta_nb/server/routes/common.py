"""Helpers every route module uses: the engine, JSON bodies, pagination and lookups."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from letta_nb.server.config import ServerConfig
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.runner import Engine
from letta_nb.server.storage import Page

MAX_LIMIT = 1000


def engine(request: Request) -> Engine:
    return request.app.state.engine


def config(request: Request) -> ServerConfig:
    return request.app.state.config


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object body; a missing/empty body is ``{}`` (never a 500)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(422, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(422, "Request body must be a JSON object")
    return body


def page(
    request: Request, table: str, *, default_order: str, default_limit: int = 100
) -> Page:
    """Parse order/limit/after/before. Unknown cursors are 400s, never silently ignored."""
    q = request.query_params
    order = q.get("order") or default_order
    if q.get("ascending") is not None and q.get("order") is None:
        order = "asc" if q.get("ascending", "").lower() == "true" else "desc"
    if order not in ("asc", "desc"):
        raise ApiError(422, "order must be 'asc' or 'desc'")
    try:
        limit = int(q.get("limit") or default_limit)
    except ValueError as exc:
        raise ApiError(422, "limit must be an integer") from exc
    limit = max(1, min(limit, MAX_LIMIT))
    cursors: dict[str, int | None] = {}
    for key in ("after", "before"):
        value = q.get(key)
        if value:
            ordinal = engine(request).store.ord_of(table, value)
            if ordinal is None:
                raise ApiError(400, f"Cursor {key}={value!r} does not name an existing item")
            cursors[key] = ordinal
        else:
            cursors[key] = None
    return Page(order, cursors["after"], cursors["before"], limit)


def require_agent(request: Request, agent_id: str) -> dict[str, Any]:
    agent = engine(request).store.get_agent(agent_id)
    if agent is None:
        raise not_found("Agent", agent_id)
    return agent


def flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)
