"""The FastAPI application factory: wires storage, the run engine, auth and the routes."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from letta_nb.server.brains.registry import default_brains
from letta_nb.server.config import ServerConfig
from letta_nb.server.errors import ApiError, api_error_handler
from letta_nb.server.routes import agents, health, messages, models, runs, tools
from letta_nb.server.runner import Engine
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
                    status_code=401, headers={"x-should-retry": "false"})
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
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    if config.token:
        app.add_middleware(TokenGuard, token=config.token)

    for module in (health, agents, messages, runs, tools, models):
        app.include_router(module.router)
    return app
