"""``GET /v1/models/``: the brains this server offers, for ``agents.create(model=...)``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server import schemas
from letta_nb.server.routes.common import engine

router = APIRouter()


@router.get("/v1/models/")
async def list_models(request: Request) -> list[dict[str, Any]]:
    return [schemas.model_json(handle) for handle in engine(request).brains]


@router.get("/v1/models/embedding")
async def list_embedding_models() -> list[dict[str, Any]]:
    return [schemas.embedding_config()]
