"""``GET /v1/health/``: the one route that never needs a token."""

from __future__ import annotations

from fastapi import APIRouter

from letta_nb.server.schemas import SERVER_VERSION

router = APIRouter()


@router.get("/v1/health/")
async def health() -> dict[str, str]:
    return {"version": SERVER_VERSION, "status": "ok"}
