"""The FastAPI application factory: wires storage, the run engine, the request guard and routes."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from letta_nb.server.brains.registry import default_brains
from letta_nb.server.config import ServerConfig
from letta_nb.server.engine import Engine, EngineSettings
from letta_nb.server.errors import ApiError, api_error_handler, validation_detail
from letta_nb.server.guard import RequestGuard
from letta_nb.server.routes import (
    agents,
    conversations,
    health,
    identity,
    messages,
    models,
    runs,
    tools,
)
from letta_nb.server.schemas import SERVER_VERSION
from letta_nb.server.storage import DbLock, Store

log = logging.getLogger("letta_nb.server.requests")


def create_app(config: ServerConfig) -> FastAPI:
    """Build the app. The database is locked and opened (and orphaned runs are closed) when
    the app starts; a second server on the same database refuses to start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lock = config.db_lock or DbLock(config.db_path).acquire()
        store = Store(
            config.db_path,
            busy_timeout_ms=config.busy_timeout_ms,
            write_retry_seconds=config.write_retry_seconds,
            pragmas=config.sqlite_pragmas,
            clock=config.clock,
        )
        brains = dict(config.brains) if config.brains is not None else default_brains()
        engine = Engine(
            store,
            EngineSettings(
                workdir=config.workdir or config.db_path.parent / "workdirs",
                retention_seconds=config.retention_seconds,
                keepalive=config.keepalive_interval,
                tool_timeout=config.tool_timeout,
                foreground_buffer=config.foreground_buffer_bytes,
                foreground_stall=config.foreground_stall_seconds,
                brains=brains,
            ),
        )
        try:
            await engine.open()
            app.state.engine = engine
            app.state.config = config
            yield
        finally:
            await engine.close()
            store.close()
            lock.release()

    app = FastAPI(title="letta_nb embedded server", lifespan=lifespan, redirect_slashes=True)
    app.add_exception_handler(ApiError, api_error_handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        log.info("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc.detail)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = validation_detail(exc.errors())
        log.info("%s %s -> 422 %s", request.method, request.url.path, detail[:300])
        return JSONResponse({"trace_id": "", "detail": detail}, status_code=422)  # as Letta

    app.add_middleware(RequestGuard, config=config)
    for module in (health, identity, agents, messages, conversations, runs, tools, models):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method documented at this path (for a correct 405 ``Allow`` header)."""
    path = request.url.path
    methods: set[str] = set()
    for template, ops in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path):
            methods |= {m.upper() for m in ops}
    return sorted(methods)


ERROR_BODY = {"type": "object", "required": ["detail"], "properties": {"detail": {}}}
ERROR_STATUSES = {
    "400": "Bad request",
    "401": "Unauthorized",
    "403": "Forbidden (a foreign Host or Origin)",
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflict (a pending approval, a busy conversation, nothing to cancel)",
    "410": "Expired",
    "413": "Request body too large",
    "415": "Request body is not application/json",
    "422": "Invalid request",
    "502": "The run failed",
}
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RUN_ID_PATTERN = f"^run-{_UUID}$"
CONVERSATION_ID_PATTERN = f"^conv-{_UUID}$"
# The message, stream, cancel and fork routes also take `default` (+ agent_id) or an agent id.
HISTORY_ID_PATTERN = f"^(default|agent-{_UUID}|conv-{_UUID})$"
STREAMING = {
    "/v1/agents/{agent_id}/messages",
    "/v1/agents/{agent_id}/messages/stream",
    "/v1/runs/{run_id}/stream",
    "/v1/conversations/{conversation_id}/messages",
    "/v1/conversations/{conversation_id}/stream",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema (bodies come from the pydantic models) plus SSE responses, the run id
    format and Letta's ``{"detail": …}`` error bodies, so schema-driven testers see the real
    contract."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=SERVER_VERSION, routes=app.routes)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if param.get("in") != "path":
                    continue
                if param.get("name") == "run_id":
                    param["schema"] = {"type": "string", "pattern": RUN_ID_PATTERN}
                elif param.get("name") == "conversation_id":
                    exact = path == "/v1/conversations/{conversation_id}"
                    pattern = CONVERSATION_ID_PATTERN if exact else HISTORY_ID_PATTERN
                    param["schema"] = {"type": "string", "pattern": pattern}
            responses = op.setdefault("responses", {})
            for status, text in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": text})
                responses[status]["content"] = {"application/json": {"schema": ERROR_BODY}}
            if path in STREAMING and method == "post":
                ok = responses.setdefault("200", {"description": "OK"})
                ok.setdefault("content", {}).update(
                    {
                        "text/event-stream": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                    }
                )
    app.openapi_schema = schema
    return schema
