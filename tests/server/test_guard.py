"""The request guard, attacked with raw HTTP: foreign Host (DNS rebinding) and Origin, non-JSON
bodies a web page can send without a preflight, oversized, deeply nested, surrogate and NaN
bodies, and malformed approval bodies. Each is refused with Letta's error shape, nothing is
stored, the server keeps serving, and each refusal is one log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from letta_nb.server import EmbeddedServer, start_in_process
from letta_nb.server.guard import body_problem, host_name, is_loopback, json_depth_over
from tests.server.scripted_brain import HANDLE, ScriptedBrain

LIMIT = 64 * 1024
TOKEN = "sk-letta-nb-FAKE-guard-0123456789abcdef"


@pytest.fixture(scope="module")
def srv() -> Iterator[EmbeddedServer]:
    brain = ScriptedBrain()
    with start_in_process(
        brains={brain.handle: brain},
        max_body_bytes=LIMIT,
        allowed_origins=("http://notebook.example:8888",),
        allowed_hosts=("my-box.lan",),
    ) as s:
        yield s


@pytest.fixture()
def h(srv: EmbeddedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=30) as c:
        yield c


def _count(h: httpx.Client) -> int:
    return len(h.get("/v1/agents/", params={"limit": 1000}).json())


AGENT = {"name": "guarded", "model": HANDLE}


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8283", "127.0.0.1.nip.io", "attacker.localhost.evil"]
)
def test_foreign_host_is_refused(h: httpx.Client, host: str) -> None:
    before = _count(h)
    for method, path, body in (
        ("POST", "/v1/agents/", AGENT),
        ("GET", "/v1/agents/", None),
        ("GET", "/v1/health/", None),
    ):
        r = h.request(method, path, json=body, headers={"Host": host})
        assert r.status_code == 403, (method, path, r.text)
        assert "Host" in r.json()["detail"] and r.headers["x-should-retry"] == "false"
    assert _count(h) == before


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "app.localhost", "my-box.lan"])
def test_loopback_bound_and_allowed_hosts_pass(
    srv: EmbeddedServer, h: httpx.Client, host: str
) -> None:
    port = srv.base_url.rsplit(":", 1)[1]
    assert h.get("/v1/agents/", headers={"Host": f"{host}:{port}"}).status_code == 200


def test_foreign_origin_is_refused_own_and_allowed_pass(
    srv: EmbeddedServer, h: httpx.Client
) -> None:
    port = int(srv.base_url.rsplit(":", 1)[1])
    before = _count(h)
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{port + 1}",  # another local web app is another origin
        f"https://127.0.0.1:{port}",
        "null",  # sandboxed iframes and file:// pages
    ):
        for method, body in (("POST", AGENT), ("GET", None)):
            r = h.request(method, "/v1/agents/", json=body, headers={"Origin": origin})
            assert r.status_code == 403, (origin, r.text)
            assert "Origin" in r.json()["detail"]
    assert _count(h) == before
    for origin in (
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "http://notebook.example:8888",
    ):
        assert h.get("/v1/agents/", headers={"Origin": origin}).status_code == 200, origin


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_non_json_bodies_are_415_and_store_nothing(h: httpx.Client, ctype: str | None) -> None:
    before = _count(h)
    headers = {"Content-Type": ctype} if ctype else {}
    r = h.post("/v1/agents/", content=json.dumps(AGENT).encode(), headers=headers)
    if ctype is None:  # httpx adds no content type to raw content: the same refusal
        assert "content-type" not in r.request.headers
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert _count(h) == before
    ok = h.post(
        "/v1/agents/",
        content=json.dumps(AGENT).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_oversized_bodies_are_413(h: httpx.Client) -> None:
    before = _count(h)
    big = {**AGENT, "description": "x" * (LIMIT + 1)}
    r = h.post("/v1/agents/", json=big)
    assert r.status_code == 413 and str(LIMIT) in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"name": "chunked", "description": "'
        for _ in range(LIMIT // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    r = h.post("/v1/agents/", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert _count(h) == before


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 2):  # the body object and "metadata" object count too
        value = {"k": value}
    return {**AGENT, "metadata": value}


def test_deep_json_is_422_and_storage_stays_servable(h: httpx.Client) -> None:
    before = _count(h)
    assert h.post("/v1/agents/", json=_nested(32)).status_code == 200
    for body in (
        json.dumps(_nested(33)).encode(),
        json.dumps(_nested(400)).encode(),
        b'{"metadata": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # no RecursionError
        b"[" * 60_000,  # unbalanced and deep
    ):
        r = h.post("/v1/agents/", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (413, 422), r.text[:200]
    assert _count(h) == before + 1
    assert h.get("/v1/agents/").status_code == 200


def test_unpaired_surrogates_and_nan_are_422(h: httpx.Client) -> None:
    before = _count(h)
    for raw in (
        b'{"name": "s", "description": "\\ud800"}',
        b'{"name": "s", "metadata": {"\\udfff": 1}}',
        b'{"name": "s", "tags": ["ok", "\\ud83d"]}',
        b'{"name": "s", "metadata": {"x": NaN}}',
        b'{"name": "s", "metadata": {"x": 1e400}}',
        b'{"name": "s", "description": "\xff\xfe"}',
    ):
        r = h.post("/v1/agents/", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert isinstance(r.json()["detail"], str)
    assert _count(h) == before
    pair = h.post(
        "/v1/agents/",
        content=b'{"name": "pair", "description": "\\ud83d\\ude00"}',
        headers={"Content-Type": "application/json"},
    )
    assert pair.status_code == 200 and pair.json()["description"] == "\N{GRINNING FACE}"
    assert h.get("/v1/agents/").status_code == 200


@pytest.mark.parametrize(
    "item",
    [
        {"type": "approval", "approvals": [5]},
        {"type": "approval", "approvals": "call_1"},
        {"type": "approval", "approvals": [{"approve": True}]},
        {"type": "approval", "approvals": [{"tool_call_id": 7, "approve": True}]},
        {"type": "approval", "approvals": [{"tool_call_id": "c", "approve": "yes"}]},
        {"type": "approval"},
        {"type": "approval", "approve": "sure", "approval_request_id": "message-1"},
        {"type": "tool_return", "tool_returns": [{"tool_call_id": 5}]},
        {"type": "tool_return", "tool_returns": "42"},
        {"type": "tool_return"},
        {"type": "nonsense"},
        {"role": "user", "content": 5},
    ],
)
def test_malformed_message_items_are_4xx(h: httpx.Client, item: dict) -> None:
    agent_id = h.post("/v1/agents/", json=AGENT).json()["id"]
    for extra in ({}, {"streaming": True, "background": True}):
        r = h.post(f"/v1/agents/{agent_id}/messages", json={"messages": [item], **extra})
        assert 400 <= r.status_code < 500, (item, r.status_code, r.text)
        assert "detail" in r.json()
    runs = h.get("/v1/runs/", params={"agent_id": agent_id}).json()
    assert runs == []  # nothing ran


def test_a_refusal_logs_one_line_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    brain = ScriptedBrain()
    with start_in_process(brains={brain.handle: brain}, token=TOKEN) as s:
        caplog.set_level(logging.INFO, logger="letta_nb.server.requests")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        cases = [
            ({"Host": "evil.example", **auth}, None, 403),
            ({}, None, 401),
            ({"Authorization": f"Bearer {TOKEN}x"}, None, 401),
            ({**auth, "Content-Type": "text/plain"}, b"{}", 415),
            ({**auth, "Content-Type": "application/json"}, b'{"name": 5}', 422),
        ]
        for headers, body, status in cases:
            caplog.clear()
            r = httpx.post(s.base_url + "/v1/agents/", headers=headers, content=body, timeout=30)
            assert r.status_code == status
            records = [rec for rec in caplog.records if rec.name == "letta_nb.server.requests"]
            assert len(records) == 1, [rec.getMessage() for rec in records]
            line = records[0].getMessage()
            assert "\n" not in line and str(status) in line and TOKEN not in line
            assert records[0].exc_info is None


def test_guard_helpers() -> None:
    assert host_name("[::1]:8283") == "::1" and host_name("LocalHost:1") == "localhost"
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.5", "::1", "[::1]:9", "a.localhost"))
    assert not any(is_loopback(h) for h in ("evil.example", "10.0.0.1", "localhost.evil", ""))
    assert not json_depth_over(b'{"a": [1, {"b": "[[[[[["}]}', 3)
    assert json_depth_over(b'{"a": [1, {"b": [2]}]}', 3)
    assert json_depth_over(b"[" * 10**6, 32)
    assert body_problem(b'{"a": "\\ud800"}', 32) is not None
    assert body_problem(b'{"a": "\\ud83d\\ude00"}', 32) is None
    assert body_problem(b"not json", 32) is None  # FastAPI's own 422 says so
