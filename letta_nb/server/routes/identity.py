"""``GET /v1/letta-nb/identity``: which server this is (authenticated, unlike health).

The launcher trusts a port only after this answers with the server id it recorded, so a
process that merely answers ``/v1/health/`` on a remembered port is never taken for the
server, and ``letta-nb stop`` only signals the pid the server itself reports.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request

from letta_nb.server.responses import Json
from letta_nb.server.schemas import IDENTITY_PATH, SERVER_VERSION

router = APIRouter()


@router.get(IDENTITY_PATH, response_model=dict[str, Any])
async def identity(request: Request) -> Json:
    config = request.app.state.config
    return Json(
        {
            "server_id": config.server_id,
            "pid": os.getpid(),
            "version": SERVER_VERSION,
            "db_path": str(config.db_path),
        }
    )
