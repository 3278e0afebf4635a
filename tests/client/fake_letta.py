"""A Letta server in an `httpx.MockTransport`: golden frames stored per run, streams cut at will.

It replays the exact recorded bytes, honours `starting_after` from the resume POST's JSON body,
counts run-creating POSTs, and records any resume at/after a run's terminal frame (the real
server hangs forever there) as a violation.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.core.lnb_golden import Frame, read_frames

AGENT = "agent-e3bf9ba5-7611-4151-a715-c31e190a9334"
SSE = {"content-type": "text/event-stream; charset=utf-8"}


@dataclass
class FakeRun:
    id: str
    frames: list[Frame]
    created_at: float = field(default_factory=time.time)
    status: str = "completed"
    total_duration_ns: int | None = None

    @property
    def terminal_seq(self) -> int:
        return max(f.seq or 0 for f in self.frames)

    @property
    def stop_reason(self) -> str | None:
        for f in self.frames:
            if isinstance(f.data, dict) and f.data.get("message_type") == "stop_reason":
                return f.data["stop_reason"]
        return None

    def json(self) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created_at, UTC).isoformat().replace("+00:00", "Z")
        return {
            "id": self.id,
            "agent_id": AGENT,
            "status": self.status,
            "background": True,
            "created_at": created,
            "stop_reason": self.stop_reason,
            "total_duration_ns": self.total_duration_ns,
        }


class CutStream(httpx.SyncByteStream):
    """The body, possibly cut at `cut` bytes by an error or a clean EOF.

    Like a socket, `close()` from another thread ends a read blocked in a hold with
    `httpx.ReadError` (`Response.close()` calls it).
    """

    def __init__(
        self,
        body: bytes,
        cut: int | None,
        error: type[Exception] | None,
        pause: Callable[[int], None] | None = None,
        hold: tuple[int, threading.Event] | None = None,
    ) -> None:
        self.body, self.cut, self.error, self.pause = body, cut, error, pause
        self.hold = hold
        self.closed = threading.Event()
        self.held = threading.Event()  # set once the reader waits in the hold

    def close(self) -> None:
        self.closed.set()

    def __iter__(self) -> Iterator[bytes]:
        end = len(self.body) if self.cut is None else self.cut
        pos = 0
        while pos < end:  # small pieces, like a network
            step = min(end - pos, 700)
            if self.pause is not None:
                self.pause(pos)
            if self.hold is not None and pos >= self.hold[0]:
                gate = self.hold[1]
                self.held.set()
                while not gate.is_set() and not self.closed.is_set():
                    gate.wait(0.01)
            if self.closed.is_set():
                raise httpx.ReadError("the client closed the connection")
            yield self.body[pos : pos + step]
            pos += step
        if self.cut is not None and self.error is not None:
            raise self.error("connection cut by the test")


class FakeLetta:
    """Routes the SDK's requests; `scripts` are the golden files each new run replays."""

    def __init__(
        self,
        scripts: list[Path],
        *,
        seed: int | None = None,
        cut_rate: float = 0.0,
        errors: tuple[type[Exception], ...] = (httpx.ReadError, httpx.RemoteProtocolError),
        clean_eof_rate: float = 0.0,
    ) -> None:
        self.scripts = list(scripts)
        self.rng = random.Random(seed)
        self.cut_rate = cut_rate
        self.errors = errors
        self.clean_eof_rate = clean_eof_rate
        self.runs: dict[str, FakeRun] = {}
        self.order: list[str] = []
        self.posts: list[dict[str, Any]] = []  # run-creating POST bodies
        self.resumes: list[tuple[str, int]] = []
        self.batch_sizes: list[int | None] = []  # batch_size of each resume POST
        self.streams: list[CutStream] = []
        self._hold: tuple[int, threading.Event] | None = None
        self.violations: list[str] = []
        self.cancelled: list[str] = []
        self.pending: list[dict[str, Any]] | None = None
        self.status_overrides: dict[str, int] = {}  # path regex → status
        self.pause: Callable[[int], None] | None = None
        #: Nothing listens (every request: connection refused), as a dead server.
        self.down = False
        self.hosts: list[str] = []  # the host of every request that reached the server

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), base_url="http://fake")

    # ---- routing -------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.hosts.append(request.url.host)
        path = request.url.path
        for pattern, status in self.status_overrides.items():
            if re.search(pattern, path):
                return httpx.Response(status, json=self._error_body(status))
        body = json.loads(request.content) if request.content else {}
        if request.method == "POST" and path.endswith("/messages/cancel"):
            out = {}
            for rid in body.get("run_ids") or []:
                self.cancelled.append(rid)
                out[rid] = "cancelled"
            return httpx.Response(200, json=out)
        if request.method == "POST" and path.endswith("/messages"):
            return self._post_messages(body)
        m = re.fullmatch(r"/v1/runs/([^/]+)/stream", path)
        if m and request.method == "POST":
            self.batch_sizes.append(body.get("batch_size"))
            return self._resume(m.group(1), int(body.get("starting_after") or 0))
        m = re.fullmatch(r"/v1/runs/([^/]+)", path)
        if m and request.method == "GET":
            run = self.runs.get(m.group(1))
            if run is None:
                return httpx.Response(404, json={"detail": "Run not found"})
            return httpx.Response(200, json=run.json())
        if path in ("/v1/runs/", "/v1/runs") and request.method == "GET":
            runs = [self.runs[r].json() for r in reversed(self.order)]
            return httpx.Response(200, json=runs)
        if re.fullmatch(r"/v1/agents/[^/]+", path) and request.method == "GET":
            return httpx.Response(200, json=self._agent())
        return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})

    @staticmethod
    def _error_body(status: int) -> dict[str, Any]:
        if status == 409:
            return {
                "detail": {
                    "code": "PENDING_APPROVAL",
                    "message": "CONFLICT: waiting",
                    "pending_request_id": "message-1",
                }
            }
        return {"detail": f"status {status}"}

    def _agent(self) -> dict[str, Any]:
        pending = None
        if self.pending:
            pending = {
                "id": "message-p",
                "date": "2026-11-29T14:08:44+00:00",
                "message_type": "approval_request_message",
                "tool_call": self.pending[0],
                "tool_calls": self.pending,
            }
        return {
            "id": AGENT,
            "name": "golden agent",
            "pending_approval": pending,
            "llm_config": {
                "model": "fake",
                "model_endpoint_type": "openai",
                "context_window": 1000,
            },
        }

    def _post_messages(self, body: dict[str, Any]) -> httpx.Response:
        self.posts.append(body)
        frames = read_frames(self.scripts.pop(0))
        rid = next(
            f.data["run_id"] for f in frames if isinstance(f.data, dict) and f.data.get("run_id")
        )
        stored = [f for f in frames if f.seq is not None]
        self.runs[rid] = FakeRun(rid, stored)
        self.order.append(rid)
        return self._serve(stored)

    def _resume(self, rid: str, after: int) -> httpx.Response:
        self.resumes.append((rid, after))
        run = self.runs.get(rid)
        if run is None:
            return httpx.Response(404, json={"detail": f"Run not found with id='{rid}'"})
        if after >= run.terminal_seq:
            self.violations.append(f"resume of {rid} at {after} >= terminal {run.terminal_seq}")
            return httpx.Response(200, headers=SSE, content=b"")
        return self._serve([f for f in run.frames if (f.seq or 0) > after])

    def _serve(self, frames: list[Frame]) -> httpx.Response:
        body = b"".join(f.raw for f in frames)
        cut = error = None
        if body and self.rng.random() < self.cut_rate:
            cut = self.rng.randrange(0, len(body))
            error = (
                None if self.rng.random() < self.clean_eof_rate else self.rng.choice(self.errors)
            )
        hold, self._hold = self._hold, None
        stream = CutStream(body, cut, error, self.pause, hold)
        self.streams.append(stream)
        return httpx.Response(200, headers=SSE, stream=stream)

    def hold_next(self, at: int) -> threading.Event:
        """The next served stream waits at byte `at` until the returned event is set (or the
        client closes it); only that one stream."""
        gate = threading.Event()
        self._hold = (at, gate)
        return gate
