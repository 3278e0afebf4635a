"""The embedded Letta-API-compatible server (background runs, durable frame log, approvals).

Exports are resolved lazily so that ``letta-nb server --help`` and its argument checks do not
pay for importing FastAPI, uvicorn and the brains.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbeddedServer", "ServerConfig", "create_app", "start_in_process"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from letta_nb.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from letta_nb.server.config import ServerConfig

        return ServerConfig
    if name in ("EmbeddedServer", "start_in_process"):
        from letta_nb.server import inprocess

        return getattr(inprocess, name)
    raise AttributeError(name)
