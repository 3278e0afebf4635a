"""Keep API keys out of everything letta_nb shows, logs or raises.

The backend registers every key it is given; any text that leaves letta_nb (error messages,
reprs, log lines) goes through `redact`.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask(value: str | None) -> str:
    """How a key is shown in a repr: its presence, never its characters."""
    return "<none>" if not value else MASK
