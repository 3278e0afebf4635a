"""Helpers of the batch tests (a module of its own: `from conftest import` breaks when
another test folder's conftest was imported first)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from letta_nb.backend import Backend
from letta_nb.batch import Batch
from letta_nb.core.cursor import CursorStore
from letta_nb.session import Session

BOUND = 120.0  # hang guard only: waits return as soon as the batch settles


class Recorder(httpx.BaseTransport):
    """A transport to the real server that records requests and can refuse some (429)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sends: list[tuple[float, int]] = []  # (time.monotonic, status) of message POSTs
        self.refuse: Callable[[httpx.Request], httpx.Response | None] = lambda r: None
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            self.calls.append(f"{request.method} {path}")
        sending = request.method == "POST" and path.endswith("/messages")
        refused = self.refuse(request) if sending else None
        response = refused if refused is not None else self.inner.handle_request(request)
        if sending:
            with self.lock:
                self.sends.append((time.monotonic(), response.status_code))
        return response


def make_session(base_url: str, store: Path, transport: Recorder | None = None) -> Session:
    client = httpx.Client(transport=transport) if transport is not None else None
    backend = Backend(base_url, None, http_client=client, max_retries=2)
    backend.reattaches_otid = True  # as connect() says of the embedded server
    return Session(backend, store=CursorStore(store))


def items_of(batch: Batch) -> list[tuple[str, str | None, str | None, list[str]]]:
    """What `check_isolation` needs of each item of `batch`."""
    runner = batch.runner
    return [
        (runner.messages[i.pos], i.conversation_id, i.answer, list(i.runs)) for i in runner.items
    ]


def conversations_of(session: Session) -> list[dict[str, Any]]:
    """The test agent's conversations on the server."""
    assert session.agent is not None
    return session.backend.list_conversations(session.agent["id"], limit=1000)


def until(pred: Callable[[], bool], timeout: float = BOUND, step: float = 0.02) -> bool:
    """Deadline polling (never a fixed sleep): True as soon as `pred()` holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True
