"""Real subprocesses: kill -9 mid-run and restart on the same DB; the CLI's refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from letta_client import Letta

from letta_nb.server.brains.registry import DEMO_HANDLE


def _spawn(db: Path, port_file: Path) -> tuple[subprocess.Popen, str]:
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "letta_nb.cli",
            "server",
            "--port",
            "0",
            "--db",
            str(db),
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            url = f"http://127.0.0.1:{port_file.read_text()}"
            try:
                if httpx.get(url + "/v1/health/", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("server subprocess did not start")


def test_kill_9_mid_run_then_restart(tmp_path: Path) -> None:
    db, port_file = tmp_path / "s.sqlite3", tmp_path / "port"
    proc, url = _spawn(db, port_file)
    try:
        c = Letta(base_url=url, max_retries=0)
        agent = c.agents.create(model=DEMO_HANDLE)
        seen = b""
        with (
            httpx.Client(base_url=url, timeout=30) as h,
            h.stream(
                "POST",
                f"/v1/agents/{agent.id}/messages",
                json={
                    "messages": [{"role": "user", "content": "/long 5000 2"}],
                    "streaming": True,
                    "background": True,
                    "stream_tokens": True,
                },
            ) as resp,
        ):
            for chunk in resp.iter_raw():
                seen += chunk
                if seen.count(b"\n\n") >= 50:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        run_id = json.loads(seen.split(b"\n\n")[0][6:])["run_id"]
    finally:
        proc.kill()
        proc.wait(10)
    proc2, url2 = _spawn(db, port_file)
    try:
        c2 = Letta(base_url=url2, max_retries=0)
        run = c2.runs.retrieve(run_id)
        assert (run.status, run.stop_reason) == ("failed", "error")
        with httpx.Client(base_url=url2, timeout=10) as h:
            replay = h.post(f"/v1/runs/{run_id}/stream", json={}).content
        complete = seen[: seen.rfind(b"\n\n") + 2]
        assert replay.startswith(complete)  # every frame a reader saw survived the kill
        tail = replay.decode().split("\n\n")[-3:]
        assert tail[0] == 'data: {"message_type":"stop_reason","stop_reason":"error"}'
        assert tail[1].startswith("event: error\ndata: ") and tail[2] == ""
        # the agent is usable again
        got = list(
            c2.agents.messages.create(
                agent.id,
                messages=[{"role": "user", "content": "/long 3"}],
                streaming=True,
                background=True,
            )
        )
        assert got[-2].stop_reason == "end_turn"
    finally:
        proc2.terminate()
        proc2.wait(10)


def test_cli_refuses_public_host_without_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LETTA_NB_SERVER_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "letta_nb.cli", "server", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "token" in out.stderr


def test_a_second_server_on_the_same_database_refuses_in_one_line(tmp_path: Path) -> None:
    db, port_file = tmp_path / "s.sqlite3", tmp_path / "port"
    first, url = _spawn(db, port_file)
    try:
        c = Letta(base_url=url, max_retries=0)
        agent = c.agents.create(model=DEMO_HANDLE)
        stream = c.agents.messages.create(
            agent.id, input="/long 2000 5", streaming=True, background=True
        )
        run_id = next(iter(stream)).run_id
        second = subprocess.run(
            [sys.executable, "-m", "letta_nb.cli", "server", "--port", "0", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3 and second.stdout == ""
        assert second.stderr.strip().count("\n") == 0 and "another letta-nb server" in second.stderr
        assert str(first.pid) in second.stderr and "Traceback" not in second.stderr
        assert c.runs.retrieve(run_id).status == "running"  # its live run was not "recovered"
        stream.close()
    finally:
        first.terminate()
        first.wait(10)
