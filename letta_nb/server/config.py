"""Server settings shared by the app factory, the CLI and the in-process starter."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from letta_nb.server.brains.base import Brain
from letta_nb.server.storage import BUSY_TIMEOUT_MS, WRITE_RETRY_SECONDS, DbLock

DEFAULT_KEEPALIVE = 20.0
DEFAULT_RETENTION = 3 * 3600.0
MAX_BODY_BYTES = 4 * 1024 * 1024  # a larger request body is a 413
MAX_JSON_DEPTH = 32  # JSON nested deeper than this (objects + arrays) is a 422
TOOL_TIMEOUT = 60.0  # seconds a custom tool's process may run
FOREGROUND_BUFFER = 8 * 1024 * 1024  # bytes a foreground stream buffers for a slow reader
FOREGROUND_STALL = 60.0  # seconds a full buffer may wait for its reader before it is cut
#: Seconds an idle HTTP connection stays open here (uvicorn's default is 5 s). Longer than a
#: client keeps an idle connection (httpx: 5 s), so the client always drops it first: a
#: connection the server closes at the moment a client reuses it breaks that request.
HTTP_KEEP_ALIVE = 75


def new_server_id() -> str:
    return "server-" + secrets.token_hex(16)


@dataclass(slots=True)
class ServerConfig:
    db_path: Path
    token: str | None = None
    keepalive_interval: float = DEFAULT_KEEPALIVE
    retention_seconds: float = DEFAULT_RETENTION
    brains: Mapping[str, Brain] | None = None  # None: the default registry (demo brain)
    workdir: Path | None = None  # where agents' tools write files; default beside the DB
    server_id: str = field(default_factory=new_server_id)
    # -- what a request may be (guard.py) ----------------------------------------------------
    host: str = "127.0.0.1"  # the bound host: always an allowed Host name
    allowed_hosts: tuple[str, ...] = ()  # extra Host names (--allow-host)
    allowed_origins: tuple[str, ...] = ()  # Origins allowed besides the server's own
    max_body_bytes: int = MAX_BODY_BYTES
    max_json_depth: int = MAX_JSON_DEPTH
    # -- runs and storage --------------------------------------------------------------------
    tool_timeout: float = TOOL_TIMEOUT
    foreground_buffer_bytes: int = FOREGROUND_BUFFER
    foreground_stall_seconds: float = FOREGROUND_STALL
    busy_timeout_ms: int = BUSY_TIMEOUT_MS
    write_retry_seconds: float = WRITE_RETRY_SECONDS
    sqlite_pragmas: tuple[str, ...] = ()  # extra PRAGMAs for every connection
    clock: Callable[[], float] = time.time  # retention and timestamps read this (tests move it)
    db_lock: DbLock | None = None  # already held (the CLI takes it before binding)
