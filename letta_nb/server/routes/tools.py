"""``/v1/tools/``: custom tools from Python source, so agents can gate them with tool rules.

The source is only parsed here (never run); calls execute in a child process (toolrun.py).
"""

from __future__ import annotations

import ast
from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server import schemas
from letta_nb.server.bodies import ToolCreate, ToolPatch, fields_set
from letta_nb.server.errors import ApiError
from letta_nb.server.ids import new_id
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import engine, page

router = APIRouter()
TOOL = dict[str, Any]


def tool_from_source(body: dict[str, Any], tool_id: str | None = None) -> dict[str, Any]:
    """Name, description and JSON schema from the source's last function (parsed, not run)."""
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


@router.post("/v1/tools/", response_model=TOOL)
async def create_tool(request: Request, body: ToolCreate) -> Json:
    eng = engine(request)
    tool = tool_from_source(fields_set(body))
    if await eng.tool_named(tool["name"]) is not None:
        raise ApiError(409, f"A tool named {tool['name']!r} already exists", retry=False)
    await eng.add_tool(tool)
    return Json(schemas.tool_json(tool))


@router.put("/v1/tools/", response_model=TOOL)
async def upsert_tool(request: Request, body: ToolCreate) -> Json:
    eng = engine(request)
    tool = tool_from_source(fields_set(body))
    existing = await eng.tool_named(tool["name"])
    if existing is None:
        await eng.add_tool(tool)
    else:
        tool["id"] = existing["id"]
        await eng.replace_tool(tool)
    return Json(schemas.tool_json(tool))


@router.get("/v1/tools/", response_model=list[TOOL])
async def list_tools(request: Request) -> Json:
    p = await page(request, "tools", default_order="desc", default_limit=50)
    tools = await engine(request).tools(p, request.query_params.get("name"))
    return Json([schemas.tool_json(t) for t in tools])


@router.get("/v1/tools/{tool_id}", response_model=TOOL)
async def retrieve_tool(request: Request, tool_id: str) -> Json:
    return Json(schemas.tool_json(await engine(request).tool(tool_id)))


@router.patch("/v1/tools/{tool_id}", response_model=TOOL)
async def update_tool(request: Request, tool_id: str, body: ToolPatch) -> Json:
    eng = engine(request)
    tool = await eng.tool(tool_id)
    changes = fields_set(body)
    if changes.get("source_code"):
        tool = tool_from_source({**tool, **changes}, tool_id)
    for key in ("description", "tags", "default_requires_approval"):
        if key in changes:
            tool[key] = changes[key]
    await eng.replace_tool(tool)
    return Json(schemas.tool_json(tool))


@router.delete("/v1/tools/{tool_id}", response_model=dict[str, Any])
async def delete_tool(request: Request, tool_id: str) -> Json:
    await engine(request).delete_tool(tool_id)
    return Json({})
