"""Bad-input matrix: every mistake gives ONE clear line, loses nothing, leaves the agent usable.

Each case runs against a real embedded server (one without and one with a token) and returns the
line a user would see (an exception's ``str``, a handle's ``error``, or a magic's output). The
common checks: the line is one line without a traceback and without the API key; a witness run
finished before the mistake keeps its transcript and its stored cursor byte for byte; and a
following ``/long 3`` on the same agent completes. ``pytest-timeout`` bounds every case.

Documented instead of tested: a 409 "busy" does not exist on the embedded server; like Letta's
``/v1/agents/{id}/messages`` it takes no per-agent lock, so a second send while a run is active
starts a second run (the ``concurrent_send`` case checks that both complete independently).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

import letta_nb
from letta_nb.backend import Backend, new_otid
from letta_nb.core import errors
from letta_nb.core.cursor import CursorStore
from letta_nb.server import start_in_process
from letta_nb.session import Session
from tests.reliability.rel_helpers import free_port

KEY = "sk-letta-nb-FAKE-0123456789abcdef"
UNKNOWN_RUN = "run-00000000-0000-4000-8000-000000000000"
pytestmark = pytest.mark.timeout(120)


class Env:
    """The servers and the session every case uses."""

    def __init__(self, open_srv: Any, tok_srv: Any) -> None:
        self.srv = open_srv
        self.tok = tok_srv
        self.session: Session = letta_nb.connect(open_srv.base_url)
        self.agent: dict[str, Any] = self.session.agent  # type: ignore[assignment]
        self.backend: Backend = self.session.backend


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETTA_NB_STATE_DIR", str(state / "client"))
        mp.delenv("LETTA_API_KEY", raising=False)
        mp.delenv("LETTA_BASE_URL", raising=False)
        open_srv = start_in_process(state / "open.sqlite3")
        tok_srv = start_in_process(state / "tok.sqlite3", token=KEY)
        try:
            yield Env(open_srv, tok_srv)
        finally:
            open_srv.stop()
            tok_srv.stop()


def _line_of(fn: Callable[[], Any]) -> str:
    """Run `fn`; the user-facing line is the LettaNbError it raises."""
    try:
        fn()
    except errors.LettaNbError as exc:
        return str(exc)
    raise AssertionError("no error was raised")


def _magic(env: Env, source: str) -> str:
    shell = globalipapp.get_ipython()
    shell.extension_manager.load_extension("letta_nb")
    import letta_nb.connection as sess

    try:
        with capture_output() as cap:
            shell.run_cell(source)
    finally:
        sess._current = env.session
        shell.extension_manager.unload_extension("letta_nb")
    return cap.stdout + cap.stderr


def _gated(env: Env) -> Any:
    handle = env.session.send("/gated", new=True)
    assert handle.wait(60) == "requires_approval", handle.error
    return handle


# ---- the cases: each returns the line the user sees ------------------------------------------
def unknown_agent(env: Env) -> str:
    line = _line_of(lambda: env.session.send("/long 3", agent="no-such-agent"))
    assert line.startswith("unknown agent 'no-such-agent' (known: ")
    return line


def unknown_run_attach(env: Env) -> str:
    line = _line_of(lambda: env.session.attach(UNKNOWN_RUN))
    assert "was not found" in line
    return line


def malformed_run_id_attach(env: Env) -> str:
    line = _line_of(lambda: env.session.attach("run-xyz"))
    assert "Invalid run ID format" in line
    return line


def malformed_magic_args(env: Env) -> str:
    out = _magic(env, "%%letta --timeout soon --bogus\n/long 3")
    assert out.startswith("UsageError: ")
    return out.strip()


def magic_unknown_agent(env: Env) -> str:
    out = _magic(env, "%%letta --agent nope --wait\n/long 3")
    assert out.startswith("letta: unknown agent 'nope'")
    return out.strip()


def server_down(env: Env) -> str:
    url = f"http://127.0.0.1:{free_port()}"
    line = _line_of(lambda: letta_nb.connect(url, agent="demo-analyst"))
    import letta_nb.connection as sess

    sess._current = env.session
    assert line.startswith(f"cannot reach the Letta server at {url}")
    return line


def server_down_mid_session(env: Env) -> str:
    backend = Backend(f"http://127.0.0.1:{free_port()}", max_retries=0)
    line = _line_of(lambda: list(backend.resume(UNKNOWN_RUN, 0)))
    assert line.startswith("cannot reach the Letta server")
    return line


def unauthorized(env: Env) -> str:
    wrong = "sk-letta-nb-WRONG-fedcba9876543210"
    line = _line_of(lambda: letta_nb.connect(env.tok.base_url, wrong, agent="x"))
    import letta_nb.connection as sess

    sess._current = env.session
    assert "refused the API key (HTTP 401)" in line and wrong not in line
    return line


def unauthorized_stream(env: Env) -> str:
    backend = Backend(env.tok.base_url, None, max_retries=0)
    line = _line_of(
        lambda: list(
            backend.start(
                env.agent["id"], [{"role": "user", "content": "/long 3"}], otid=new_otid()
            )
        )
    )
    assert "HTTP 401" in line
    return line


def not_found_run(env: Env) -> str:
    line = _line_of(lambda: env.backend.get_run(UNKNOWN_RUN))
    assert line == f"run {UNKNOWN_RUN} was not found on {env.backend.base_url}"
    return line


def not_found_agent_stream(env: Env) -> str:
    line = _line_of(
        lambda: list(
            env.backend.start(
                "agent-00000000-0000-4000-8000-000000000000",
                [{"role": "user", "content": "hi"}],
                otid=new_otid(),
            )
        )
    )
    assert "was not found" in line
    return line


def concurrent_send(env: Env) -> str:
    """No 409 busy on this server (documented): two live runs both complete, each its own."""
    a = env.session.send("/long 200 2", new=True)
    b = env.session.send("/long 5", new=True)
    assert a.wait(60) == "completed" and b.wait(60) == "completed"
    assert a.run_id != b.run_id
    assert "token5" in b.transcript and "token6" not in b.transcript
    return "no 409: both runs completed"


def pending_approval_send(env: Env) -> str:
    gated = _gated(env)
    pending = env.backend.pending_approval(env.agent["id"])
    other = env.session.send("a plain message while the approval waits", new=True)
    assert other.wait(60) == "failed"
    line = other.error or ""
    assert line.startswith("CONFLICT: Cannot send a new message")
    # the HTTP form (non-streaming POST) maps to PendingApproval, not retried by the SDK
    exc_line = _line_of(
        lambda: env.backend._call(
            lambda: env.backend._client.agents.messages.create(
                env.agent["id"], messages=[{"role": "user", "content": "hi"}]
            ),
            "send",
        )
    )
    assert exc_line.startswith("the agent is waiting for an approval")
    assert env.backend.pending_approval(env.agent["id"]) == pending  # still pending, intact
    assert gated.approve().wait(60) == "completed", gated.error
    return line


def expired(env: Env) -> str:
    done = env.session.send("/long 4", new=True)
    assert done.wait(60) == "completed"
    rid = done.run_id
    con = sqlite3.connect(env.srv.db_path, timeout=30)
    with con:
        con.execute("UPDATE runs SET created_at = created_at - 86400 WHERE id = ?", (rid,))
    con.close()
    fresh = Session(env.backend, agent=env.agent, store=env.session.store)  # a new kernel
    handle = fresh.attach(rid)
    assert handle.wait(30) == "error"
    line = handle.error or ""
    assert "past the server's stream retention" in line
    assert _line_of(lambda: list(env.backend.resume(rid, 0))).startswith(f"run {rid} is past")
    assert done.transcript.startswith("token1 token2 token3 token4\n")  # kept as read
    return line


def double_approval(env: Env) -> str:
    gated = _gated(env)
    call = gated.approval.tool_calls[0]["tool_call_id"]
    assert gated.approve().wait(60) == "completed"
    line = _line_of(gated.approve)
    assert line.startswith(f"run {gated.run_id} has no pending approval")
    server_line = _line_of(
        lambda: list(
            env.backend.approve(
                env.agent["id"],
                [{"type": "approval", "tool_call_id": call, "approve": True}],
                otid=new_otid(),
            )
        )
    )
    assert "No tool call is currently awaiting approval" in server_line
    assert "\n" not in server_line
    return line


def wrong_tool_call_id(env: Env) -> str:
    gated = _gated(env)
    pending = env.backend.pending_approval(env.agent["id"])
    chunks = list(
        env.backend.approve(
            env.agent["id"],
            [{"type": "approval", "tool_call_id": "call_wrong", "approve": True}],
            otid=new_otid(),
        )
    )
    assert chunks[-1].message_type == "error_message"
    line = " ".join(str(chunks[-1].data.get("detail") or chunks[-1].data["message"]).split())
    assert "Invalid tool call IDs" in line
    assert env.backend.pending_approval(env.agent["id"]) == pending  # the approval stays
    assert gated.approve().wait(60) == "completed", gated.error
    return line


def resume_after_end(env: Env) -> str:
    done = env.session.send("/long 6", new=True)
    assert done.wait(60) == "completed"
    rid, last = done.run_id, done.follower.last_seq
    t0 = time.monotonic()
    again = env.session.attach(rid, starting_after=last)
    assert again is not done or again.status == "completed"
    assert again.wait(30) == "completed"
    assert list(Backend(env.srv.base_url).resume(rid, last + 100)) == []
    took = time.monotonic() - t0
    fresh = Session(env.backend, agent=env.agent, store=env.session.store)
    late = fresh.attach(rid, starting_after=last)
    assert late.wait(30) == "completed", late.error
    assert late.follower.frames == 0  # nothing twice
    return f"resume after the end: completed, 0 frames ({took:.1f} s)"


@contextlib.contextmanager
def _warnings() -> Iterator[list[str]]:
    """The one-line warnings letta_nb logs (what a notebook shows on stderr)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("letta_nb")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def corrupt_cursor_store(env: Env) -> str:
    """Every %%letta used to fail with a raw sqlite3.DatabaseError until the file was deleted."""
    path = Path(tempfile.mkdtemp()) / "cursors.db"
    path.write_bytes(b"\x00garbage, not SQLite\x00" * 64)
    with _warnings() as lines:
        kernel = Session(env.backend, agent=env.agent, store=CursorStore(path))
        h = kernel.send("/long 4", key="after-corruption")
        assert h.wait(60) == "completed", h.error
    assert len(lines) == 1 and "moved it to cursors.db.corrupt-" in lines[0]
    assert CursorStore(path).get("after-corruption") is not None  # the fresh store works
    return lines[0]


def full_disk(env: Env) -> str:
    """The disk fills up mid-run: one line, the run goes on and completes on the server."""
    store = CursorStore(Path(tempfile.mkdtemp()) / "cursors.db")
    kernel = Session(env.backend, agent=env.agent, store=store)
    assert kernel.send("/long 2", key="before-full").wait(60) == "completed"
    db = store._conn()
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with _warnings() as lines:
        h = kernel.send("/long 300", key="while-full")
        assert h.wait(60) == "completed", h.error
    assert len(lines) == 1 and "database or disk is full" in lines[0]
    assert h.transcript.startswith("token1 token2") and "token300" in h.transcript
    return lines[0]


def _holed_run(env: Env, status: str) -> str:
    """A finished run whose stored frames lost seqs 20-22 (a failed commit)."""
    done = env.session.send("/long 60", new=True)
    assert done.wait(60) == "completed"
    rid = done.run_id
    con = sqlite3.connect(env.srv.db_path, timeout=30)
    with con:
        con.execute("DELETE FROM frames WHERE run_id = ? AND seq BETWEEN 20 AND 22", (rid,))
        con.execute("UPDATE runs SET status = ? WHERE id = ?", (status, rid))
    con.close()
    assert rid is not None
    return rid


def gap_in_frame_log_failed_run(env: Env) -> str:
    """The issue's case: the server says failed, the frames have a hole: never completed."""
    rid = _holed_run(env, "failed")
    fresh = Session(env.backend, agent=env.agent, store=env.session.store)
    h = fresh.attach(rid)
    assert h.wait(60) == "failed" and h.follower.transcript.holes(rid) == [(20, 22)]
    line = h.warning or ""
    assert "no longer has seqs 20–22 (3 frames)" in line
    assert "token18 token22" in h.transcript and "token59 token60" in h.transcript
    return line


def gap_in_frame_log_completed_run(env: Env) -> str:
    rid = _holed_run(env, "completed")
    fresh = Session(env.backend, agent=env.agent, store=env.session.store)
    h = fresh.attach(rid)
    assert h.wait(60) == "incomplete"
    assert "token60" in h.transcript and "token20" not in h.transcript
    frame = fresh.chunks_frame(rid)  # the table shows the hole too (and warns)
    assert 21 not in set(frame["seq_id"]) and frame["seq_id"].max() == 63
    return h.warning or ""


def magic_timeout_inf(env: Env) -> str:
    out = _magic(env, "%%letta --timeout inf --wait\n/long 3")
    assert out.startswith("UsageError: argument --timeout: wants a positive, finite number")
    return out.strip()


def magic_option_typo(env: Env) -> str:
    out = _magic(env, "%%letta --agnet demo-analyst\n/long 3")
    assert out.strip() == "UsageError: unknown option --agnet (did you mean --agent?)"
    return out.strip()


CASES = [
    unknown_agent,
    unknown_run_attach,
    malformed_run_id_attach,
    malformed_magic_args,
    magic_unknown_agent,
    server_down,
    server_down_mid_session,
    unauthorized,
    unauthorized_stream,
    not_found_run,
    not_found_agent_stream,
    concurrent_send,
    pending_approval_send,
    expired,
    double_approval,
    wrong_tool_call_id,
    resume_after_end,
    corrupt_cursor_store,
    full_disk,
    gap_in_frame_log_failed_run,
    gap_in_frame_log_completed_run,
    magic_timeout_inf,
    magic_option_typo,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(env: Env, case: Callable[[Env], str]) -> None:
    witness = env.session.send("/long 5", key="witness")
    assert witness.wait(60) == "completed"
    before = (witness.transcript, env.session.store.get("witness").to_json())  # type: ignore

    line = case(env)

    assert line and "\n" not in line.strip(), line
    assert "Traceback" not in line and KEY not in line
    assert len(line) < 400, line
    after = (witness.transcript, env.session.store.get("witness").to_json())  # type: ignore
    assert after == before  # the cursor and the transcript of earlier work are intact
    ok = env.session.send("/long 3", new=True)  # the agent is usable
    assert ok.wait(60) == "completed", ok.error
    assert ok.transcript.startswith("token1 token2 token3")


def test_matrix_covers_the_issue(tmp_path: Path) -> None:
    names = {c.__name__ for c in CASES}
    for need in (
        "unknown_agent",
        "unknown_run_attach",
        "malformed_magic_args",
        "server_down",
        "unauthorized",
        "not_found_run",
        "pending_approval_send",
        "expired",
        "double_approval",
        "wrong_tool_call_id",
        "resume_after_end",
        "corrupt_cursor_store",
        "full_disk",
        "gap_in_frame_log_failed_run",
        "magic_timeout_inf",
        "magic_option_typo",
    ):
        assert need in names
