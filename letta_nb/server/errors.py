"""Errors rendered the way Letta renders them: ``{"detail": ...}`` with a conventional status."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """Raised anywhere in a route; turned into ``{"detail": detail}``.

    ``retry`` False adds ``x-should-retry: false`` so the SDK does not retry 409/5xx answers that
    retrying cannot fix (a pending approval, for example).
    """

    def __init__(self, status: int, detail: Any, *, retry: bool | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.retry = retry


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, f"{kind} not found with id='{ident}'")


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {} if exc.retry is None else {"x-should-retry": "true" if exc.retry else "false"}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)
