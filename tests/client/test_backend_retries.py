"""Backend retries, decided in one place: idempotent calls retry cut bodies (bounded),
create_agent looks up before creating again, run lists paginate without repeats, and a dead
server is relaunched through `on_unreachable`. Waits go through a manual clock: no sleeping."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from letta_nb.backend import Backend
from letta_nb.core.clock import ManualClock
from letta_nb.core.errors import (
    NotFound,
    RateLimited,
    ServerUnavailable,
    StreamInterrupted,
    Unreachable,
)
from letta_nb.run import Follower
from tests.client.fake_letta import AGENT, CutStream, FakeLetta

RUN = "run-00000000-0000-4000-8000-000000000001"
LONG = "05_replay_finished_run/01_replay_from_0_batch_1000.sse"
BOUND = 120.0


def _run_json(rid: str = RUN, i: int = 0) -> dict[str, Any]:
    return {
        "id": rid,
        "agent_id": AGENT,
        "status": "completed",
        "stop_reason": "end_turn",
        "background": True,
        "created_at": f"2026-11-29T14:{i // 60 % 60:02d}:{i % 60:02d}Z",
    }


def _cut_json(body: Any, at: int) -> httpx.Response:
    raw = json.dumps(body).encode()
    return httpx.Response(
        200,
        headers={"content-type": "application/json", "content-length": str(len(raw))},
        stream=CutStream(raw, at, httpx.RemoteProtocolError),
    )


def _backend(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Backend:
    clock = ManualClock(instant=True)
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://fake")
    return Backend("http://fake", None, http_client=client, clock=clock, **kw)


def test_an_idempotent_call_retries_a_cut_body_with_bounded_backoff() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= 3:  # the first three answers break half-way through the body
            return _cut_json(_run_json(), 40)
        return httpx.Response(200, json=_run_json())

    b = _backend(handler)
    assert b.get_run(RUN)["status"] == "completed"
    assert len(seen) == 4 and all(r.headers["x-stainless-retry-count"] == "0" for r in seen)
    waits = b.clock.waits  # type: ignore[attr-defined]
    assert len(waits) == 3 and waits == sorted(waits) and max(waits) <= b.retry_cap


def test_a_call_that_keeps_breaking_is_one_line_after_its_retries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _cut_json(_run_json(), 10)

    with pytest.raises(StreamInterrupted) as info:
        _backend(handler, max_retries=4).get_run(RUN)
    assert len(seen) == 5 and "\n" not in str(info.value) and f"run {RUN}" in str(info.value)
    seen.clear()
    with pytest.raises(StreamInterrupted):
        _backend(handler, max_retries=0).get_run(RUN)
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("code", "cls", "tries"),
    [(503, ServerUnavailable, 3), (429, RateLimited, 3), (500, ServerUnavailable, 1)],
)
def test_busy_answers_are_retried_and_errors_are_not(code: int, cls: type, tries: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(code, json={"detail": "busy"})

    with pytest.raises(cls):
        _backend(handler, max_retries=2).get_run(RUN)
    assert len(seen) == tries
    seen.clear()
    with pytest.raises(NotFound):
        _backend(lambda r: seen.append(r) or httpx.Response(404, json={})).get_run(RUN)
    assert len(seen) == 1


def test_a_429_is_retried_never_sooner_than_its_retry_after() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= 2:
            return httpx.Response(429, headers={"retry-after": "7"}, json={"detail": "slow down"})
        return httpx.Response(200, json=_run_json())

    b = _backend(handler)
    assert b.get_run(RUN)["status"] == "completed" and len(seen) == 3
    waits = b.clock.waits  # type: ignore[attr-defined]
    assert len(waits) == 2 and min(waits) >= 7.0  # the backoff alone would be < 1 s


def test_a_refused_send_is_rate_limited_with_the_servers_retry_after() -> None:
    from email.utils import formatdate

    def handler(request: httpx.Request) -> httpx.Response:
        when = formatdate(clock.time() + 12, usegmt=True)  # the HTTP-date form
        return httpx.Response(429, headers={"retry-after": when}, json={"detail": "limit"})

    b = _backend(handler)
    clock = b.clock
    with pytest.raises(RateLimited) as err:
        list(b.start(AGENT, [{"role": "user", "content": "x"}], otid="otid-1"))
    assert err.value.retry_after is not None and 11.0 <= err.value.retry_after <= 12.0
    assert "rate limiting requests" in str(err.value) and b.clock.waits == []  # type: ignore[attr-defined]
    no_header = _backend(lambda r: httpx.Response(429, json={}))
    with pytest.raises(RateLimited) as err:
        list(no_header.start(AGENT, [{"role": "user", "content": "x"}], otid="otid-2"))
    assert err.value.retry_after is None


class _AgentServer:
    """POST /v1/agents/ creates the agent, then the answer may break; GET lists by name."""

    def __init__(self, *, create_then_cut: int = 0, cut_before_create: int = 0) -> None:
        self.agents: list[dict[str, Any]] = []
        self.posts = 0
        self.create_then_cut = create_then_cut
        self.cut_before_create = cut_before_create

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.rstrip("/") == "/v1/agents":
            self.posts += 1
            if self.cut_before_create:
                self.cut_before_create -= 1
                return _cut_json({}, 0)  # nothing was created, the answer never came
            body = json.loads(request.content)
            agent = {
                "id": f"agent-{len(self.agents)}",
                "name": body["name"],
                "created_at": "2999-01-01T00:00:00Z",
                "model": body.get("model"),
            }
            self.agents.append(agent)
            if self.create_then_cut:
                self.create_then_cut -= 1
                return _cut_json(agent, 5)  # created, but the answer broke
            return httpx.Response(200, json=agent)
        if request.method == "GET" and request.url.path.rstrip("/") == "/v1/agents":
            name = request.url.params.get("name")
            return httpx.Response(200, json=[a for a in self.agents if a["name"] == name])
        return httpx.Response(404, json={"detail": "no route"})


def test_create_agent_is_never_retried_blindly() -> None:
    server = _AgentServer(create_then_cut=1)
    agent = _backend(server).create_agent("demo-analyst")
    assert server.posts == 1 and len(server.agents) == 1  # found by name, not created twice
    assert agent["id"] == "agent-0"
    server = _AgentServer(cut_before_create=2)
    agent = _backend(server).create_agent("demo-analyst")
    assert server.posts == 3 and len(server.agents) == 1 and agent["name"] == "demo-analyst"


class _RunsServer:
    """`GET /v1/runs/` over `n` runs, `after`-paginated; `cut_pages` answers break once."""

    def __init__(self, n: int, *, cut_pages: set[int], broken_after: bool = False) -> None:
        self.runs = [_run_json(f"run-{i:05d}", i) for i in range(n)]
        self.cut_pages = set(cut_pages)
        self.broken_after = broken_after
        self.pages: list[tuple[str | None, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        after, limit = params.get("after"), int(params["limit"])
        self.pages.append((after, limit))
        start = 0
        if after and not self.broken_after:  # a broken server ignores the cursor
            start = next(i for i, r in enumerate(self.runs) if r["id"] == after) + 1
        page = self.runs[start : start + min(limit, 1000)]
        index = len(self.pages)
        if index in self.cut_pages:
            self.cut_pages.discard(index)
            return _cut_json(page, 3000)
        return httpx.Response(200, json=page)


def test_run_lists_paginate_through_cuts_without_repeats() -> None:
    server = _RunsServer(2500, cut_pages={2})
    runs = _backend(server).list_runs(limit=5000)
    assert [r["id"] for r in runs] == [r["id"] for r in server.runs]  # each once, in order
    assert [p for p in server.pages] == [
        (None, 1000),
        ("run-00999", 1000),
        ("run-00999", 1000),  # the cut page, asked again
        ("run-01999", 1000),
    ]
    assert len(_backend(_RunsServer(2500, cut_pages=set())).list_runs(limit=1200)) == 1200
    broken = _RunsServer(1500, cut_pages=set(), broken_after=True)
    runs = _backend(broken).list_runs(limit=3000)  # the real server's broken `after`
    assert len(runs) == len({r["id"] for r in runs}) == 1000 and len(broken.pages) == 2


# ---- relaunch --------------------------------------------------------------------------------
def test_a_refused_connection_relaunches_once_and_switches_the_url() -> None:
    fake = FakeLetta([])
    fake.runs[RUN] = _fake_run()
    backend = Backend(
        "http://fake", None, http_client=fake.client(), clock=ManualClock(instant=True)
    )
    calls: list[str] = []

    def relaunch() -> str | None:
        calls.append(backend.base_url)
        with pytest.raises(Unreachable):  # the hook using the backend: no second relaunch
            backend.get_run(RUN)
        fake.down = False
        return "http://relaunched:9"

    backend.on_unreachable = relaunch
    fake.down = True
    assert backend.get_run(RUN)["id"] == RUN
    assert calls == ["http://fake"] and backend.base_url == "http://relaunched:9"
    assert fake.hosts[-1] == "relaunched"
    fake.down = True
    with pytest.raises(Unreachable):  # within `relaunch_interval`: not relaunched again
        backend.get_run(RUN)
    assert len(calls) == 1
    backend.clock.advance(backend.relaunch_interval)  # type: ignore[attr-defined]
    fake.down = True
    backend.get_run(RUN)
    assert len(calls) == 2


def test_a_relaunch_that_cannot_work_is_its_own_one_line() -> None:
    fake = FakeLetta([])
    fake.down = True
    backend = Backend("http://fake", None, http_client=fake.client())

    def relaunch() -> str | None:
        raise ServerUnavailable("the embedded server could not start: see /tmp/x/server.log")

    backend.on_unreachable = relaunch
    with pytest.raises(
        ServerUnavailable, match=re.escape("could not start: see /tmp/x/server.log")
    ):
        backend.get_run(RUN)


def _fake_run() -> Any:
    from tests.client.fake_letta import FakeRun

    return FakeRun(RUN, [])


def test_followers_recover_by_themselves_after_a_relaunch(golden_dir: Path) -> None:
    """The server dies mid-run (every connection refused); the backend's hook relaunches it;
    the follower's own bounded reconnect then finishes the run: nothing lost, no second run."""
    fake = FakeLetta([golden_dir / LONG])
    backend = Backend("http://fake", None, max_retries=0, http_client=fake.client())
    relaunched = threading.Event()

    def relaunch() -> str | None:
        fake.down = False
        relaunched.set()
        return None

    backend.on_unreachable = relaunch
    f = Follower(backend, agent_id=AGENT)
    f.backoff_base, f.backoff_cap = 0.001, 0.005
    fake.hold_next(20000)
    f.start([{"role": "user", "content": "x"}])
    _until(lambda: fake.streams and fake.streams[0].held.is_set())
    fake.down = True  # the server process is gone
    assert f.drop_connection()
    assert f.wait(BOUND) == "completed", f.error
    assert relaunched.is_set() and len(fake.posts) == 1
    assert f.last_seq == 303 and f.transcript.holes() == []


def test_a_send_that_reached_nobody_is_sent_again_after_the_relaunch(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    backend = Backend("http://fake", None, max_retries=0, http_client=fake.client())

    def relaunch() -> str | None:
        fake.down = False
        return None

    backend.on_unreachable = relaunch
    fake.down = True
    f = Follower(backend, agent_id=AGENT)
    f.backoff_base, f.backoff_cap = 0.001, 0.005
    f.start([{"role": "user", "content": "x"}])
    assert f.wait(BOUND) == "completed", f.error
    assert len(fake.posts) == 1 and f.last_seq == 303


def test_a_send_to_a_dead_server_without_a_hook_is_one_line(golden_dir: Path) -> None:
    fake = FakeLetta([golden_dir / LONG])
    fake.down = True
    backend = Backend("http://fake", None, max_retries=0, http_client=fake.client())
    f = Follower(backend, agent_id=AGENT)
    f.backoff_base, f.backoff_cap = 0.001, 0.005
    f.start([{"role": "user", "content": "x"}])
    assert f.wait(BOUND) == "error"
    assert f.error and re.match(r"cannot reach the Letta server at http://fake", f.error)
    assert "\n" not in f.error and fake.posts == []


def _until(pred: Callable[[], Any]) -> None:
    import time

    deadline = time.monotonic() + BOUND
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.005)
