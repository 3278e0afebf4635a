"""A dead server relaunched through `Backend.on_unreachable`: open sessions recover by themselves.

A real `letta-nb server` process is killed (-9) while a follower streams `/long 3000 2`. The
session's backend has a relaunch hook (the embedded server's `connect()` installs the real one;
here a test hook respawns the process on the same database and port, and counts its calls).
Nobody calls anything: the follower's bounded reconnect meets a refused connection, the backend
calls the hook once, and the follower reads the run to the end the restarted server gives it
(`failed`, "server stopped": the server died mid-run), every stored frame exactly once. A send
made while the server is dead again reaches the relaunched server and completes: one run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import letta_nb
from letta_nb.backend import Backend
from letta_nb.core.clock import ManualClock
from tests.reliability.rel_helpers import (
    RecordingTranscript,
    db_seqs,
    diff_frames,
    free_port,
    replay,
    spawn_server,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture()
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_dead_server_is_relaunched_and_followers_recover_by_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.setattr("letta_nb.session.Transcript", RecordingTranscript)
    db, port, log = tmp_path / "server.sqlite3", free_port(), tmp_path / "server.log"
    procs.append(spawn_server(db, port, log))
    url = f"http://127.0.0.1:{port}"
    session = letta_nb.connect(base_url=url)
    clock = ManualClock(instant=True)  # the backend's retry waits and its relaunch rate limit
    session.backend.clock = clock  # type: ignore[attr-defined]
    relaunches: list[float] = []

    def relaunch() -> str | None:  # what connect() installs for the embedded server
        relaunches.append(clock.monotonic())
        procs.append(spawn_server(db, port, log))  # same database, same port
        return None  # the base URL is unchanged

    session.backend.on_unreachable = relaunch  # type: ignore[attr-defined]
    handle = session.send("/long 3000 2")
    follower = handle.follower
    assert wait_for(lambda: follower.last_seq >= 200, 60), (follower.status, follower.error)
    _kill(procs[0])
    seq_at_kill = follower.last_seq

    assert handle.wait(120) == "failed", (handle.status, handle.error)  # nobody intervened
    assert len(relaunches) == 1
    assert handle.error and "server stopped" in handle.error and "\n" not in handle.error
    rid = handle.run_id
    assert rid is not None and handle.runs == [rid]
    direct = Backend(url)
    want = replay(direct, rid)
    tr = follower.transcript
    assert isinstance(tr, RecordingTranscript)
    got = tr.accepted.get(rid, [])
    assert not diff_frames(got, want), diff_frames(got, want)
    assert [s for s, _, _ in want] == db_seqs(db, rid) == list(range(1, len(want) + 1))
    assert len(want) > seq_at_kill

    _kill(procs[-1])  # dead again; the next cell's send reaches nobody, then the relaunch
    clock.advance(Backend.relaunch_interval)  # past the hook's rate limit
    after = session.send("/long 3", new=True)
    assert after.wait(60) == "completed", after.error
    assert len(relaunches) == 2
    agent_id = session.agent["id"]  # type: ignore[index]
    assert len(direct.list_runs(agent_id=agent_id, limit=1000)) == 2  # no duplicate run
    print(
        f"\n[relaunch] killed at seq {seq_at_kill}; relaunched by the hook, {len(got)} frames "
        f"delivered once; the next send after a second kill completed ({len(relaunches)} "
        "relaunches)"
    )
    session.close()
