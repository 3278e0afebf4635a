"""Server settings shared by the app factory, the CLI and the in-process starter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from letta_nb.server.brains.base import Brain

DEFAULT_KEEPALIVE = 20.0
DEFAULT_RETENTION = 3 * 3600.0


@dataclass(slots=True)
class ServerConfig:
    db_path: Path
    token: str | None = None
    keepalive_interval: float = DEFAULT_KEEPALIVE
    retention_seconds: float = DEFAULT_RETENTION
    brains: Mapping[str, Brain] | None = None  # None: the default registry (demo brain)
    workdir: Path | None = None  # where agents' tools write files; default beside the DB
    extra: dict[str, str] = field(default_factory=dict)
