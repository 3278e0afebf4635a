"""Helpers shared by the server tests."""

from __future__ import annotations

import json

import httpx
from letta_client import Letta


def bg(client: Letta, agent_id: str, text: str, **kw: object) -> list:
    """Send a background streaming message and collect everything the SDK yields."""
    opts = {
        "streaming": True,
        "background": True,
        "stream_tokens": True,
        "include_pings": True,
        **kw,
    }
    return list(
        client.agents.messages.create(
            agent_id, messages=[{"role": "user", "content": text}], **opts
        )
    )


def post_sse(http: httpx.Client, path: str, body: dict | None) -> str:
    r = http.post(path, json=body) if body is not None else http.post(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r.text


def frames(text: str) -> list[str]:
    return [f + "\n\n" for f in text.split("\n\n") if f]


def frame_json(frame: str) -> tuple[str | None, object]:
    """(event name or None, parsed data) of one SSE frame."""
    event = None
    data = ""
    for line in frame.strip("\n").split("\n"):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
    return event, (data if data == "[DONE]" else json.loads(data))


def wait_until(condition: object, timeout: float, what: str, every: float = 0.02) -> None:
    """Deadline polling (never a fixed sleep): until ``condition()`` is true, else fail."""
    import time

    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s: {what}")
