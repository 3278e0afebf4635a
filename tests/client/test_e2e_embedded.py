"""End to end against the embedded server: send, approve, re-send with the same key."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from letta_nb.backend import Backend
from letta_nb.core.cursor import CursorStore
from letta_nb.session import DEMO_AGENT, Session

BOUND = 120.0  # hang guard only: waits return as soon as the run settles


@pytest.fixture()
def session(embedded_server: str, tmp_path: Path) -> Session:
    backend = Backend(embedded_server, None, max_retries=0)
    backend.reattaches_otid = True
    s = Session(backend, store=CursorStore(tmp_path / "cursors.db"))
    s.agent = s.ensure_agent()
    yield s
    s.store.close()


def _runs(session: Session) -> list[str]:
    return [r["id"] for r in session.backend.list_runs(agent_id=session.agent["id"])]


def test_send_streams_to_completion(session: Session) -> None:
    assert session.agent["name"] == DEMO_AGENT
    h = session.send("/long 50", key="e2e-long", wait=True, timeout=BOUND)
    assert h.status == "completed", h.error
    assert h.transcript.startswith("token1 token2") and "token50" in h.transcript
    assert h.transcript.endswith("■ end_turn\n" + h.transcript.splitlines()[-1])
    assert h.cursor.last_seq == 53 and h.cursor.status == "completed"  # [DONE] is 54
    frame = h.chunks
    assert list(frame["seq_id"])[:2] == [1, 2] and len(frame) == 53
    assert "api_key" in repr(session) and "text/html" in h._repr_mimebundle_()


def test_resend_with_same_key_starts_no_run(session: Session, tmp_path: Path) -> None:
    h = session.send("/long 20", key="e2e-again", wait=True, timeout=BOUND)
    assert h.status == "completed"
    before = _runs(session)
    again = session.send("/long 20", key="e2e-again")
    assert again.follower is h.follower and again.transcript == h.transcript
    # a "kernel restart": a new session over the same cursor file
    fresh = Session(session.backend, store=CursorStore(session.store.path))
    fresh.agent = session.agent
    restored = fresh.send("/long 20", key="e2e-again")
    assert restored.status == "completed" and restored.transcript == h.transcript
    assert _runs(session) == before


def test_restart_while_running_resumes_from_the_cursor(session: Session) -> None:
    h = session.send("/long 40 50", key="e2e-running")
    deadline = time.monotonic() + BOUND
    while h.follower.last_seq < 5:  # some tokens arrived, most are still to come
        assert time.monotonic() < deadline
        time.sleep(0.005)
    h.detach()
    assert h.status == "detached"
    before = _runs(session)
    fresh = Session(session.backend, store=CursorStore(session.store.path))
    fresh.agent = session.agent
    session.store.put(session.cursor_of(h))  # what the listener writes every ~2 s
    resumed = fresh.send("/long 40 50", key="e2e-running", wait=True, timeout=BOUND)
    assert resumed.status == "completed", resumed.error
    said = [e for e in resumed.follower.transcript.entries if e.kind == "assistant_message"]
    text = "".join(str(e.text) for e in said)
    assert text.split() == [f"token{i}" for i in range(1, 41)]  # nothing lost or doubled
    assert said[0].seq_first == 2 and said[-1].seq_last == 41
    assert _runs(session) == before


def test_approval_continues_in_the_same_transcript(session: Session) -> None:
    h = session.send("/gated", key="e2e-gated", wait=True, timeout=BOUND)
    assert h.status == "requires_approval", h.error
    first = h.run_id
    h.approve()
    assert h.wait(BOUND) == "completed", h.error
    assert h.runs == [first, h.run_id] and h.run_id != first
    assert "approval requested: write_report" in h.transcript
    assert "← write_report [success]" in h.transcript and "reports/" in h.transcript
    again = session.send("/gated", key="e2e-gated")
    assert again.status == "completed" and again.runs == h.runs


def test_policy_denies_unattended(session: Session) -> None:
    h = session.send("/gated", key="e2e-deny", wait=True, timeout=BOUND, policy="deny")
    assert h.status == "completed", h.error
    assert h.approval.state == "denied" and len(h.runs) == 2


def test_unknown_agent_and_run_are_one_line(session: Session) -> None:
    from letta_nb.core.errors import NotFound

    with pytest.raises(NotFound, match="unknown agent 'nobody'"):
        session.send("hi", agent="nobody")
    h = session.attach("run-00000000-0000-4000-8000-000000009999", agent=session.agent["id"])
    assert h.wait(BOUND) == "error" and "was not found" in h.error and "\n" not in h.error


def test_a_finished_stream_gives_its_connection_back(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK stops reading at `[DONE]`, which made httpx drop the connection: a TCP connect
    (on Letta Cloud a TLS handshake) per run. Read to the end, sends reuse one connection."""
    connects: list[object] = []
    create_connection = socket.create_connection

    def counted(*args: object, **kwargs: object) -> socket.socket:
        connects.append(args[0])
        return create_connection(*args, **kwargs)  # type: ignore[arg-type]

    session.send("/long 2", key="e2e-conn-warm", wait=True, timeout=BOUND)
    monkeypatch.setattr(socket, "create_connection", counted)
    for i in range(5):
        h = session.send(f"/long 3 {i}", key=f"e2e-conn-{i}", wait=True, timeout=BOUND)
        assert h.status == "completed" and "token3" in h.transcript
        deadline = time.monotonic() + BOUND  # its reader reads the [DONE] after telling the end
        while not h.follower.quiescent:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert len(connects) <= 1, connects  # (one, if the pool's connection had gone stale)


def test_the_server_keeps_idle_connections_longer_than_the_client(tmp_path: Path) -> None:
    """Pooled connections (see the test above) race the server's keep-alive: a connection the
    server closes just as the client reuses it breaks that request. The client must always be
    the one to drop an idle connection first."""
    from letta_nb.backend import POOL_LIMITS
    from letta_nb.server import start_in_process
    from letta_nb.server.config import HTTP_KEEP_ALIVE

    assert POOL_LIMITS.keepalive_expiry is not None
    assert 10 * POOL_LIMITS.keepalive_expiry <= HTTP_KEEP_ALIVE
    with start_in_process(tmp_path / "server.db") as server:
        assert server._server.config.timeout_keep_alive == HTTP_KEEP_ALIVE
