"""kill -9 of a real ``letta-nb server`` mid-run, restart on the same DB and port.

The follower (through ``letta_nb.connect`` and a RunHandle, as a notebook uses it) must ride out
the outage with its bounded backoff, receive every stored frame exactly once (checked frame by
frame against a replay from the restarted server and its SQLite log), and end in the state the
restarted server gives the interrupted run: failed, with an error frame, shown by the handle and
by the widget.
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


def test_kill_9_mid_run_restart_same_db_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.setattr("letta_nb.session.Transcript", RecordingTranscript)
    db, port, log = tmp_path / "server.sqlite3", free_port(), tmp_path / "server.log"
    procs.append(spawn_server(db, port, log))
    url = f"http://127.0.0.1:{port}"
    session = letta_nb.connect(base_url=url)
    agent_id = session.agent["id"]  # type: ignore[index]
    handle = session.send("/long 3000 2")
    follower = handle.follower
    follower.backoff_cap = 1.0  # reconnect promptly once the server is back (still bounded)
    assert wait_for(lambda: follower.last_seq >= 200, 60), (follower.status, follower.error)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait(10)
    seq_at_kill = follower.last_seq
    reconnecting = lambda: "reconnecting" in (follower.warning or "")  # noqa: E731
    assert wait_for(reconnecting, 60)  # the follower now fails to connect and backs off
    assert follower.status == "running"  # an outage is not an ending
    procs.append(spawn_server(db, port, log))

    assert handle.wait(90) == "failed", (handle.status, handle.error)
    rid = handle.run_id
    assert rid is not None and handle.runs == [rid]
    assert handle.error and "server stopped" in handle.error and "\n" not in handle.error
    direct = Backend(url)
    run = direct.get_run(rid)
    assert (run["status"], run["stop_reason"]) == ("failed", "error")
    want = replay(direct, rid)
    tr = follower.transcript
    assert isinstance(tr, RecordingTranscript)
    got = tr.accepted.get(rid, [])
    assert not diff_frames(got, want), diff_frames(got, want)
    assert [s for s, _, _ in want] == db_seqs(db, rid) == list(range(1, len(want) + 1))
    assert want[-2][1] == "stop_reason" and want[-1][1] == "error_message"
    assert len(want) > seq_at_kill  # frames stored after the follower's last one came too
    assert len(direct.list_runs(agent_id=agent_id, limit=1000)) == 1  # no second run

    from letta_nb import widgets

    view = widgets.RunView(handle, pump=widgets.InlinePump())
    view.flush()
    header = view.document["h"]
    assert header["st"] == "failed"
    assert any("server stopped" in str(v) for v in (header.get("err"), *view.document["e"]))
    assert not header["ctl"]  # no Cancel / Detach on a run that is over

    # the agent is usable on the restarted server
    after = session.send("/long 3", new=True)
    assert after.wait(60) == "completed", after.error
    print(
        f"\n[server-crash] killed at seq {seq_at_kill}; {len(got)} frames delivered once; "
        f"run ended failed at seq {want[-1][0]}"
    )
    session.close()
