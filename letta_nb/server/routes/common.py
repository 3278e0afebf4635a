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


# Body fields by route: JSON Schema of each known field. The same table validates bodies
# (a wrong type is a 422, never a 500) and documents them in /openapi.json.
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_OBJ = {"type": "object"}
_STRS = {"type": "array", "items": _STR}
_OBJS = {"type": "array", "items": _OBJ}
_NULLABLE = lambda schema: {"anyOf": [schema, {"type": "null"}]}  # noqa: E731

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/agents/"): {
        "name": _STR,
        "model": _STR,
        "llm_config": _OBJ,
        "embedding": _STR,
        "system": _STR,
        "agent_type": _STR,
        "description": _STR,
        "metadata": _OBJ,
        "tags": _STRS,
        "tool_ids": _STRS,
        "tools": _STRS,
        "tool_rules": _OBJS,
        "memory_blocks": _OBJS,
    },
    ("post", "/v1/agents/{agent_id}/messages"): {
        "messages": _OBJS,
        "input": {},
        "streaming": _BOOL,
        "background": _BOOL,
        "stream_tokens": _BOOL,
        "include_pings": _BOOL,
        "max_steps": _INT,
        "otid": _STR,
        "use_assistant_message": _BOOL,
        "include_return_message_types": _STRS,
    },
    ("post", "/v1/runs/{run_id}/stream"): {
        "starting_after": _INT,
        "batch_size": _INT,
        "include_pings": _BOOL,
        "poll_interval": {"type": "number"},
    },
    ("post", "/v1/agents/{agent_id}/messages/cancel"): {"run_ids": _STRS},
}
_TOOL = {
    "source_code": _STR,
    "description": _STR,
    "tags": _STRS,
    "json_schema": _OBJ,
    "default_requires_approval": _BOOL,
    "source_type": _STR,
}
BODIES[("post", "/v1/tools/")] = BODIES[("put", "/v1/tools/")] = _TOOL
BODIES[("patch", "/v1/tools/{tool_id}")] = _TOOL
REQUIRED_FIELDS = {
    ("post", "/v1/tools/"): ("source_code",),
    ("put", "/v1/tools/"): ("source_code",),
}
BODIES[("post", "/v1/agents/{agent_id}/messages/stream")] = BODIES[
    ("post", "/v1/agents/{agent_id}/messages")
]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}

_ARTICLE = {
    "string": "a string",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "object": "an object",
    "array": "a list",
}


def body_schema(fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema of a body: known fields may also be null; others are allowed."""
    return {
        "type": "object",
        "additionalProperties": True,
        "properties": {k: _NULLABLE(v) if v else {} for k, v in fields.items()},
    }


def _matches(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if value is None or kind is None:
        return True
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    if not isinstance(value, _PY_TYPES[kind]):
        return False
    if isinstance(value, list) and "items" in schema:
        return all(v is not None and _matches(v, schema["items"]) for v in value)
    return True


def check_body(body: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """422 (Letta's ``{"detail": …}``) when a known field has the wrong JSON type."""
    for key, schema in BODIES[(method, path)].items():
        if key in body and not _matches(body[key], schema):
            items = schema.get("items", {}).get("type")
            what = f"a list of {items}s" if items else _ARTICLE[schema["type"]]
            raise ApiError(422, f"{key} must be {what}")
    return body


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


def page(request: Request, table: str, *, default_order: str, default_limit: int = 100) -> Page:
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
