"""Run the server inside this process: uvicorn on a background thread, on a free port.

For notebooks and tests. ``start_in_process`` returns only once ``/v1/health/`` answers, and
``stop()`` shuts uvicorn down and joins the thread (both with bounded waits).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from letta_nb.server.app import create_app
from letta_nb.server.brains.base import Brain
from letta_nb.server.config import (
    DEFAULT_KEEPALIVE,
    DEFAULT_RETENTION,
    HTTP_KEEP_ALIVE,
    ServerConfig,
)
from letta_nb.server.storage import DbLock

START_TIMEOUT = 60.0  # bounded, but patient with a loaded machine
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """A running in-process server; use as a context manager or call ``stop()``."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        base_url: str,
        config: ServerConfig,
        tmpdir: Path | None,
    ) -> None:
        self._server = server
        self._thread = thread
        self.base_url = base_url
        self.config = config
        self.db_path = config.db_path
        self._tmpdir = tmpdir

    @property
    def app(self):
        return self._server.config.app

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_process(
    db_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    keepalive_interval: float = DEFAULT_KEEPALIVE,
    retention_seconds: float = DEFAULT_RETENTION,
    brains: Mapping[str, Brain] | None = None,
    **settings: Any,
) -> EmbeddedServer:
    """Start a server thread; ``db_path=None`` uses a temporary database removed on stop.

    ``settings`` are further ``ServerConfig`` fields (limits, clock, storage tuning). A
    database another server holds is refused at once (``DatabaseInUse``, one line).
    """
    tmpdir = None
    if db_path is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="letta-nb-server-"))
        db_path = tmpdir / "server.sqlite3"
    db_path = Path(db_path)
    lock = DbLock(db_path).acquire()
    config = ServerConfig(
        db_path=db_path,
        token=token,
        keepalive_interval=keepalive_interval,
        retention_seconds=retention_seconds,
        brains=brains,
        host=host,
        db_lock=lock,
        **settings,
    )
    port = port or free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=HTTP_KEEP_ALIVE,
        )
    )
    thread = threading.Thread(target=server.run, name=f"letta-nb-server-{port}", daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not thread.is_alive():
            lock.release()
            raise RuntimeError("letta_nb server thread exited during startup")
        if server.started:
            try:
                if httpx.get(base_url + "/v1/health/", timeout=1.0).status_code == 200:
                    return EmbeddedServer(server, thread, base_url, config, tmpdir)
            except httpx.HTTPError:
                pass
        time.sleep(0.02)
    server.should_exit = True
    thread.join(STOP_TIMEOUT)
    lock.release()
    raise TimeoutError(f"letta_nb server did not become healthy within {START_TIMEOUT} s")
