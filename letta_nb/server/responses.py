"""JSON responses that can always be sent, even for a stored row that could not be (e.g. one
written by an older version with an unpaired surrogate or nesting too deep to encode)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi.responses import Response

from letta_nb.server.config import MAX_JSON_DEPTH

log = logging.getLogger(__name__)


def _text(value: str) -> str:
    """``value`` with unpaired surrogates replaced by U+FFFD."""
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def servable(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that JSON can encode as UTF-8: surrogates replaced, NaN/Infinity and
    unknown objects nulled or stringified, containers deeper than the limit cut to null."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_JSON_DEPTH * 2:
        return None
    if isinstance(value, dict):
        return {_text(str(k)): servable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [servable(v, depth + 1) for v in value]
    return _text(str(value))


def encode(content: Any) -> bytes:
    try:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
        log.warning("a stored value could not be encoded as is (%s); served repaired", exc)
        return json.dumps(
            servable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


class Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode(content)
