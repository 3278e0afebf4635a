"""The detached server of a state dir: one per state dir, verified identity, private files,
relaunch on the same port with the same token, no fallback, and safe stop/status commands."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from letta_client import Letta

import letta_nb.connection as session_mod
from letta_nb.core.errors import ServerUnavailable
from letta_nb.server.launcher import (
    DISCOVERY,
    ServerInfo,
    ServerStartError,
    _dead,
    ensure_server,
    server_status,
    stop_server,
)

pytestmark = pytest.mark.timeout(240)


def _wait_dead(pid: int, timeout: float = 20) -> None:
    """Until ``pid`` has released everything (a zombie leader may outlive its threads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _dead(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


@pytest.fixture()
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state" / "server"
    yield path
    stop_server(path)


def _auth(info: ServerInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {info.token}"}


def test_reused_verified_private_and_never_shows_the_token(state: Path) -> None:
    info = ensure_server(state)
    assert ensure_server(state) == info  # reused, not restarted
    assert server_status(state) == info
    assert info.token not in repr(info) and "***" in repr(info)
    # the launched server always requires its token; health stays open and Letta-shaped
    assert httpx.get(info.base_url + "/v1/agents/").status_code == 401
    assert httpx.get(info.base_url + "/v1/health/").json()["status"] == "ok"
    ident = httpx.get(info.base_url + "/v1/letta-nb/identity", headers=_auth(info)).json()
    assert (ident["server_id"], ident["pid"]) == (info.server_id, info.pid)
    assert httpx.get(info.base_url + "/v1/letta-nb/identity").status_code == 401
    # a run writes a workdir and WAL files: everything stays private
    c = Letta(base_url=info.base_url, api_key=info.token, max_retries=0)
    agent = c.agents.create(model="letta_nb/demo")
    list(c.agents.messages.create(agent.id, input="/long 3", streaming=True, background=True))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]  # atomic writes
    found = json.loads((state / DISCOVERY).read_text())
    assert {"pid", "port", "base_url", "server_id", "token"} <= set(found)
    assert info.token not in (state / "server.log").read_text()


def test_relaunch_on_the_same_port_with_the_same_token(state: Path) -> None:
    first = ensure_server(state)
    c = Letta(base_url=first.base_url, api_key=first.token, max_retries=0)
    agent = c.agents.create(name="kept", model="letta_nb/demo")
    os.kill(first.pid, signal.SIGKILL)
    _wait_dead(first.pid)
    assert server_status(state) is None
    second = ensure_server(state)
    assert second.pid != first.pid and second.server_id != first.server_id
    assert (second.base_url, second.token) == (first.base_url, first.token)
    assert c.agents.retrieve(agent.id).name == "kept"  # the old client works unchanged


def test_relaunch_moves_to_a_new_port_when_the_old_one_is_taken(state: Path) -> None:
    first = ensure_server(state)
    port = int(first.base_url.rsplit(":", 1)[1])
    os.kill(first.pid, signal.SIGKILL)
    _wait_dead(first.pid)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        second = ensure_server(state)
    assert second.base_url != first.base_url and second.token == first.token


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every GET 200 with a health body: what a stale port may hold."""

    def do_GET(self) -> None:
        body = b'{"version":"0.16.8","status":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def test_a_process_answering_health_on_the_recorded_port_is_not_trusted(state: Path) -> None:
    first = ensure_server(state)
    port = int(first.base_url.rsplit(":", 1)[1])
    os.kill(first.pid, signal.SIGKILL)
    _wait_dead(first.pid)
    impostor = http.server.HTTPServer(("127.0.0.1", port), _Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        assert httpx.get(first.base_url + "/v1/health/").status_code == 200
        assert server_status(state) is None
        second = ensure_server(state)
        assert second.base_url != first.base_url  # a real server, elsewhere
        ident = httpx.get(second.base_url + "/v1/letta-nb/identity", headers=_auth(second))
        assert ident.json()["server_id"] == second.server_id
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_stop_signals_only_a_verified_server(state: Path) -> None:
    info = ensure_server(state)
    stop_server(state)
    _wait_dead(info.pid)
    # a discovery file naming an unrelated live process: stop must leave it alone
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {
            "pid": bystander.pid,
            "port": 9,
            "base_url": "http://127.0.0.1:9",
            "server_id": "server-forged",
            "token": info.token,
        }
        (state / DISCOVERY).write_text(json.dumps(record))
        assert stop_server(state) is False
        assert bystander.poll() is None  # not killed
        assert not (state / DISCOVERY).exists()  # the stale record is gone
    finally:
        bystander.kill()
        bystander.wait(10)


def test_cli_status_and_stop(state: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "letta_nb.cli", *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    down = cli("status")
    assert down.returncode == 1 and "no letta-nb server" in down.stdout
    info = ensure_server(state)
    up = cli("status")
    assert up.returncode == 0 and info.base_url in up.stdout and str(info.pid) in up.stdout
    assert info.token not in up.stdout + up.stderr
    stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    _wait_dead(info.pid)
    assert cli("stop").returncode == 1


def _forgotten(state: Path) -> Iterator[None]:
    """The discovery file is gone (a new launch would open the live server's database); put
    back afterwards so the fixture can stop that server."""
    record = (state / DISCOVERY).read_text()
    (state / DISCOVERY).unlink()
    try:
        yield
    finally:
        (state / DISCOVERY).write_text(record)


forgotten = contextlib.contextmanager(_forgotten)


def test_a_server_that_cannot_start_is_one_line_naming_the_log(state: Path) -> None:
    info = ensure_server(state)
    with forgotten(state), pytest.raises(ServerStartError) as err:
        ensure_server(state)
    text = str(err.value)
    assert "\n" not in text and str(state / "server.log") in text and "another" in text
    assert httpx.get(info.base_url + "/v1/health/").status_code == 200  # untouched


def test_connect_has_no_fallback_to_another_database(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(state.parent))
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.delenv("LETTA_BASE_URL", raising=False)
    monkeypatch.setattr(session_mod, "_current", None)
    ensure_server(state)
    with forgotten(state), pytest.raises(ServerUnavailable) as err:
        session_mod.connect()
    assert "\n" not in str(err.value) and "server.log" in str(err.value)
    assert not list(state.parent.glob("inprocess*"))
    assert session_mod._current is None


def test_connect_uses_the_token_and_relaunches_through_on_unreachable(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(state.parent))
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.delenv("LETTA_BASE_URL", raising=False)
    monkeypatch.setattr(session_mod, "_current", None)
    session = session_mod.connect()
    try:
        info = server_status(state)
        assert info is not None and session.backend.base_url == info.base_url
        assert session.backend._api_key == info.token
        assert info.token not in repr(session) + repr(session.backend)
        assert session.agent is not None and session.agent["name"] == "demo-analyst"
        os.kill(info.pid, signal.SIGKILL)
        _wait_dead(info.pid)
        relaunch = session.backend.on_unreachable
        assert relaunch is not None
        assert relaunch() == info.base_url  # same port, same token: the session carries on
        assert session.send("/long 3", new=True).wait(60) == "completed"
    finally:
        session.close()


KERNEL = textwrap.dedent(
    """
    import sys, letta_nb
    s = letta_nb.connect()
    print(s.backend.base_url, s.agent["id"], flush=True)
    """
)


def test_kernels_connecting_at_once_share_one_server_and_one_demo_agent(state: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA")}
    env["LETTA_NB_STATE_DIR"] = str(state.parent)
    kernels = [
        subprocess.Popen([sys.executable, "-c", KERNEL], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    answers = {k.communicate(timeout=180)[0].strip() for k in kernels}
    assert all(k.returncode == 0 for k in kernels)
    assert len(answers) == 1, answers  # one base URL, one demo agent id
    info = server_status(state)
    assert info is not None
    c = Letta(base_url=info.base_url, api_key=info.token, max_retries=0)
    assert [a.name for a in c.agents.list().items].count("demo-analyst") == 1
    found = json.loads((state / DISCOVERY).read_text())
    assert found["pid"] == info.pid and found["base_url"].endswith(f":{found['port']}")
