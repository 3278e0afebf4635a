"""A detached ``letta-nb server`` that outlives notebook kernels, found again via a discovery file.

``ensure_server(state_dir)`` reuses the server recorded in ``state_dir/server.json`` when its
health check passes, otherwise starts a new one in its own session (so a kernel restart or a
Ctrl-C in the notebook does not kill it) with its database in ``state_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

DISCOVERY = "server.json"
START_TIMEOUT = 60.0  # bounded, but patient with a loaded machine
STOP_TIMEOUT = 10.0


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/v1/health/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _read(state_dir: Path) -> dict[str, object] | None:
    try:
        return json.loads((state_dir / DISCOVERY).read_text())
    except (OSError, ValueError):
        return None


def _child_env() -> dict[str, str]:
    """Make ``letta_nb`` importable in the child even when it is not pip-installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def ensure_server(state_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> str:
    """Base URL of a healthy detached server for ``state_dir``, starting one if needed."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    found = _read(state)
    if found and _healthy(str(found.get("base_url"))):
        return str(found["base_url"])
    port_file = state / "server.port"
    port_file.unlink(missing_ok=True)
    log = open(state / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "letta_nb.cli",
                "server",
                "--host",
                host,
                "--port",
                str(port),
                "--db",
                str(state / "server.sqlite3"),
                "--port-file",
                str(port_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=str(state),
            env=_child_env(),
        )
    finally:
        log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"letta-nb server exited with {proc.returncode}; see {state / 'server.log'}"
            )
        if port_file.exists() and port_file.read_text().strip():
            base_url = f"http://{host}:{port_file.read_text().strip()}"
            if _healthy(base_url):
                (state / DISCOVERY).write_text(json.dumps({"pid": proc.pid, "base_url": base_url}))
                return base_url
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"letta-nb server did not become healthy within {START_TIMEOUT} s")


def stop_server(state_dir: str | Path) -> bool:
    """Stop the server recorded in ``state_dir`` (SIGTERM, then SIGKILL); True if one ran."""
    state = Path(state_dir)
    found = _read(state)
    if not found:
        return False
    pid = int(str(found.get("pid", 0)))
    (state / DISCOVERY).unlink(missing_ok=True)
    if pid <= 0:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
