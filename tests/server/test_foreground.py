"""A stalled foreground reader costs bounded memory: the run waits for it (backpressure), then
cuts it loose with an error frame and completes into storage without it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from letta_nb.server import EmbeddedServer, start_in_process
from tests.server.scripted_brain import HANDLE, ScriptedBrain
from tests.server.server_helpers import wait_until

CAP = 64 * 1024
TOKENS = 300_000  # ~60 MB of frames: far more than the socket buffers and the cap


@pytest.fixture()
def srv() -> Iterator[EmbeddedServer]:
    brain = ScriptedBrain()
    with start_in_process(
        brains={brain.handle: brain}, foreground_buffer_bytes=CAP, foreground_stall_seconds=0.5
    ) as s:
        yield s


def test_a_stalled_foreground_reader_is_bounded_and_the_run_completes(srv: EmbeddedServer) -> None:
    h = httpx.Client(base_url=srv.base_url, timeout=60)
    agent = h.post("/v1/agents/", json={"model": HANDLE}).json()["id"]
    host, port = srv.base_url.removeprefix("http://").split(":")
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": f"long {TOKENS}"}],
            "streaming": True,
            "stream_tokens": True,
        }
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /v1/agents/{agent}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    engine = srv.app.state.engine
    try:

        def runs() -> list[dict]:
            return h.get("/v1/runs/", params={"agent_id": agent}).json()

        wait_until(lambda: bool(runs()), 30, "the run never started")
        run_id = runs()[0]["id"]
        live = engine.live_run(run_id)
        assert live is not None and live.pipe is not None
        wait_until(lambda: runs()[0]["status"] == "completed", 120, "the run did not complete")
        assert live.pipe.abandoned and live.pipe.peak <= CAP + 4096
        msgs = h.get(f"/v1/runs/{run_id}/messages").json()
        text = next(m["content"] for m in msgs if m["message_type"] == "assistant_message")
        assert len(text.split()) == TOKENS  # stored whole, although nobody read the stream
        received = b""
        sock.settimeout(30)
        while not received.endswith(b"0\r\n\r\n"):  # the end of the chunked response
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        assert b"event: error" in received and b"read too slowly" in received
    finally:
        sock.close()
        h.close()
