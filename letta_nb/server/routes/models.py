"""``GET /v1/models/``: the brains this server offers, for ``agents.create(model=...)``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server import schemas
from letta_nb.server.responses import Json
from letta_nb.server.routes.common import engine

router = APIRouter()


@router.get("/v1/models/", response_model=list[dict[str, Any]])
async def list_models(request: Request) -> Json:
    return Json([schemas.model_json(handle) for handle in engine(request).brains])


@router.get("/v1/models/embedding", response_model=list[dict[str, Any]])
async def list_embedding_models() -> Json:
    return Json([schemas.embedding_config()])
