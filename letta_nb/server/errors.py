"""Errors rendered the way Letta renders them: ``{"detail": ...}`` with a conventional status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

log = logging.getLogger("letta_nb.server.requests")


class ApiError(Exception):
    """Raised anywhere in a route or the engine; turned into ``{"detail": detail}``.

    ``retry`` False adds ``x-should-retry: false`` so the SDK does not retry 409/5xx answers that
    retrying cannot fix (a pending approval, for example). ``extra`` adds top-level keys beside
    ``detail`` (Letta's busy 409 names the holder's ``run_id`` there).
    """

    def __init__(
        self,
        status: int,
        detail: Any,
        *,
        retry: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.retry = retry
        self.extra = extra or {}


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, f"{kind} not found with id='{ident}'")


def validation_detail(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one line (Letta, FastAPI too, sends its 422 detail as a string)."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, str(exc)[:300])
    headers = {} if exc.retry is None else {"x-should-retry": "true" if exc.retry else "false"}
    return JSONResponse(
        {"detail": exc.detail, **exc.extra}, status_code=exc.status, headers=headers
    )
