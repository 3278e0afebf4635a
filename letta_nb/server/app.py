"""The FastAPI application factory: wires storage, the run engine, auth and the routes."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from letta_nb.server.brains.registry import default_brains
from letta_nb.server.config import ServerConfig
from letta_nb.server.errors import ApiError, api_error_handler
from letta_nb.server.routes import agents, health, messages, models, runs, tools
from letta_nb.server.routes.common import BODIES, REQUIRED_FIELDS, body_schema
from letta_nb.server.runner import Engine
from letta_nb.server.schemas import SERVER_VERSION
from letta_nb.server.storage import Store

OPEN_PATHS = ("/v1/health", "/v1/health/")


class TokenGuard:
    """Pure ASGI bearer-token check (no response buffering, so streams stay fast)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                reply = JSONResponse(
                    {"detail": "Unauthorized: a valid Bearer token is required."},
                    status_code=401,
                    headers={"x-should-retry": "false"},
                )
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: ServerConfig) -> FastAPI:
    """Build the app. The store opens (and orphaned runs are closed) when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(config.db_path)
        brains = dict(config.brains) if config.brains is not None else default_brains()
        workdir = config.workdir or config.db_path.parent / "workdirs"
        engine = Engine(store, brains, workdir)
        engine.close_orphans()
        app.state.engine = engine
        app.state.config = config
        try:
            yield
        finally:
            for run in list(engine.live.values()):
                if run.task is not None:
                    run.task.cancel()
            engine.close()
            store.close()

    app = FastAPI(title="letta_nb embedded server", lifespan=lifespan, redirect_slashes=True)
    app.add_exception_handler(ApiError, api_error_handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    if config.token:
        app.add_middleware(TokenGuard, token=config.token)

    for module in (health, agents, messages, runs, tools, models):
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
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflict (e.g. a pending approval)",
    "410": "Expired",
    "422": "Invalid request",
    "502": "The run failed",
}
RUN_ID_PATTERN = "^run-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
STREAMING = {
    "/v1/agents/{agent_id}/messages",
    "/v1/agents/{agent_id}/messages/stream",
    "/v1/runs/{run_id}/stream",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus what the handlers read by hand: JSON bodies, SSE responses and
    Letta's ``{"detail": …}`` error bodies, so schema-driven testers see the real contract."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=SERVER_VERSION, routes=app.routes)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            fields = BODIES.get((method, path))
            if fields is not None:
                body = body_schema(fields)
                required = REQUIRED_FIELDS.get((method, path))
                if required:
                    body["required"] = list(required)
                    for name in required:  # required means present and not null
                        body["properties"][name] = {**fields[name], "minLength": 1}
                op["requestBody"] = {
                    "required": bool(required),
                    "content": {"application/json": {"schema": body}},
                }
            for param in op.get("parameters", []):
                if param.get("name") == "run_id" and param.get("in") == "path":
                    param["schema"] = {"type": "string", "pattern": RUN_ID_PATTERN}
            responses = op.setdefault("responses", {})
            for status, text in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": text})
                responses[status]["content"] = {"application/json": {"schema": ERROR_BODY}}
            if path in STREAMING:
                ok = responses.setdefault("200", {"description": "OK"})
                ok.setdefault("content", {}).update(
                    {
                        "text/event-stream": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                    }
                )
    app.openapi_schema = schema
    return schema
