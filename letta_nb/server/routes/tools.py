"""``/v1/tools/``: custom tools from Python source, so agents can gate them with tool rules."""

from __future__ import annotations

import ast
from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server import schemas
from letta_nb.server.errors import ApiError, not_found
from letta_nb.server.ids import new_id
from letta_nb.server.routes.common import check_body, engine, json_body, page

router = APIRouter()


def tool_from_source(body: dict[str, Any], tool_id: str | None = None) -> dict[str, Any]:
    """Name, description and JSON schema from the source's first function (parsed, not run)."""
    source = body.get("source_code")
    if not isinstance(source, str) or not source.strip():
        raise ApiError(422, "source_code is required")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:  # ValueError: e.g. NUL bytes in the source
        raise ApiError(400, f"source_code is not valid Python: {exc}") from exc
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not funcs:
        raise ApiError(400, "source_code must define a function")
    func = funcs[-1]
    doc = ast.get_docstring(func) or ""
    description = body.get("description") or (doc.strip().splitlines() or [""])[0]
    props = {a.arg: {"type": "string"} for a in func.args.args}
    return {
        "id": tool_id or new_id("tool"),
        "name": func.name,
        "description": description,
        "source_code": source,
        "tags": body.get("tags") or [],
        "json_schema": body.get("json_schema")
        or {
            "name": func.name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
        "default_requires_approval": body.get("default_requires_approval"),
    }


@router.post("/v1/tools/")
async def create_tool(request: Request) -> dict[str, Any]:
    store = engine(request).store
    tool = tool_from_source(check_body(await json_body(request), "post", "/v1/tools/"))
    if store.tool_by_name(tool["name"]) is not None:
        raise ApiError(409, f"A tool named {tool['name']!r} already exists", retry=False)
    store.insert_tool(tool)
    return schemas.tool_json(tool)


@router.put("/v1/tools/")
async def upsert_tool(request: Request) -> dict[str, Any]:
    store = engine(request).store
    body = check_body(await json_body(request), "put", "/v1/tools/")
    tool = tool_from_source(body)
    existing = store.tool_by_name(tool["name"])
    if existing is None:
        store.insert_tool(tool)
    else:
        tool["id"] = existing["id"]
        store.update_tool(tool)
    return schemas.tool_json(tool)


@router.get("/v1/tools/")
async def list_tools(request: Request) -> list[dict[str, Any]]:
    p = page(request, "tools", default_order="desc", default_limit=50)
    tools = engine(request).store.list_tools(p, request.query_params.get("name"))
    return [schemas.tool_json(t) for t in tools]


@router.get("/v1/tools/{tool_id}")
async def retrieve_tool(request: Request, tool_id: str) -> dict[str, Any]:
    tool = engine(request).store.get_tool(tool_id)
    if tool is None:
        raise not_found("Tool", tool_id)
    return schemas.tool_json(tool)


@router.patch("/v1/tools/{tool_id}")
async def update_tool(request: Request, tool_id: str) -> dict[str, Any]:
    store = engine(request).store
    tool = store.get_tool(tool_id)
    if tool is None:
        raise not_found("Tool", tool_id)
    body = check_body(await json_body(request), "patch", "/v1/tools/{tool_id}")
    if body.get("source_code"):
        tool = tool_from_source({**tool, **body}, tool_id)
    for key in ("description", "tags", "default_requires_approval"):
        if key in body:
            tool[key] = body[key]
    store.update_tool(tool)
    return schemas.tool_json(tool)


@router.delete("/v1/tools/{tool_id}")
async def delete_tool(request: Request, tool_id: str) -> dict[str, Any]:
    store = engine(request).store
    if store.get_tool(tool_id) is None:
        raise not_found("Tool", tool_id)
    store.delete_tool(tool_id)
    return {}
