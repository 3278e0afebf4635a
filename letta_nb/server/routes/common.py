"""Helpers every route module uses: the engine, pagination and query flags."""

from __future__ import annotations

from fastapi import Request

from letta_nb.server.config import ServerConfig
from letta_nb.server.engine import Engine
from letta_nb.server.errors import ApiError
from letta_nb.server.storage import Page

MAX_LIMIT = 1000


def engine(request: Request) -> Engine:
    return request.app.state.engine


def config(request: Request) -> ServerConfig:
    return request.app.state.config


async def page(
    request: Request,
    table: str,
    *,
    default_order: str,
    default_limit: int = 100,
    conversation_id: str | None = None,
) -> Page:
    """Parse order/limit/after/before. Unknown cursors are 400s, never silently ignored
    (message cursors of a conversation must name its own messages)."""
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
    return await engine(request).page(
        table, order, q.get("after"), q.get("before"), limit, conversation_id=conversation_id
    )


def flag(value: str | bool | None, default: bool) -> bool:
    """A query-string boolean ("true"/"1"/"yes")."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return value.lower() in ("1", "true", "yes")
