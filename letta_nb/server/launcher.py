"""One detached ``letta-nb server`` per state dir, outliving notebook kernels.

``ensure_server(state_dir)`` returns the verified live server of that state dir, starting one
if there is none. Under an exclusive file lock (``state_lock``), so N kernels calling at once
start one server. The server runs in its own session (a kernel restart or a Ctrl-C in the
notebook does not kill it), always with a token, and is trusted only after it proves, with
that token, that it is the server the discovery file names (``GET /v1/letta-nb/identity``):
whatever else answers on a remembered port is never taken for it.

A dead server is relaunched on the same port when it is free, with the same token, so a
client's base URL and key stay valid. A server that cannot start is a ``ServerStartError``
(one line naming ``server.log``): there is no fallback to another database.

Files in the state dir (0700; files 0600): ``server.json`` (discovery: pid, port, base_url,
server_id, token; written atomically), ``token`` (random, kept across relaunches),
``server.sqlite3`` (+ WAL, SHM, lock file), ``server.log`` (rotating) and ``launch.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from letta_nb._filelock import exclusive
from letta_nb.server.schemas import IDENTITY_PATH

DISCOVERY = "server.json"
TOKEN_FILE = "token"
DB_FILE = "server.sqlite3"
LOG_FILE = "server.log"
LOCK_FILE = "launch.lock"
PORT_FILE = "server.port"
START_TIMEOUT = 60.0  # bounded, but patient with a loaded machine
STOP_TIMEOUT = 10.0
LOCK_TIMEOUT = START_TIMEOUT + 30.0  # another process may be starting the server meanwhile
IDENTITY_TIMEOUT = 2.0
POLL = 0.05
SECRET_ENV = ("LETTA_NB_SERVER_TOKEN", "LETTA_API_KEY")


@dataclass(frozen=True)
class ServerInfo:
    """A verified live server. The token is the client's API key; it is never shown."""

    base_url: str
    token: str
    server_id: str
    pid: int
    log_path: Path

    def __repr__(self) -> str:
        return (
            f"ServerInfo(base_url={self.base_url!r}, token='***', "
            f"server_id={self.server_id!r}, pid={self.pid}, log_path={str(self.log_path)!r})"
        )


class ServerStartError(RuntimeError):
    """The server could not be started or reached; the message is one line naming the log."""


# -- the per-state-dir lock (reentrant within a thread) -----------------------------------
_local = threading.local()


@contextlib.contextmanager
def state_lock(state_dir: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive across processes and threads (``flock``); re-entering in one thread is free."""
    state = Path(state_dir).expanduser().resolve()
    held: dict[str, int] = _local.__dict__.setdefault("held", {})
    key = str(state)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    _private_dir(state)
    with exclusive(state / LOCK_FILE, timeout, poll=POLL) as taken:
        if not taken:
            raise ServerStartError(
                f"timed out waiting for another process starting the letta-nb server "
                f"in {state}; see {state / LOG_FILE}"
            )
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)


# -- files -------------------------------------------------------------------------------------
def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # the state dir is ours alone, whatever the umask made it


def _write_private(path: Path, text: str) -> None:
    """Write atomically (temp file + rename), mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _token(state: Path) -> str:
    """The state dir's token: reused across relaunches, created (random) on first use."""
    path = state / TOKEN_FILE
    with contextlib.suppress(OSError):
        token = path.read_text().strip()
        if len(token) >= 32:
            os.chmod(path, 0o600)
            return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def _read(state: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((state / DISCOVERY).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _info(found: dict[str, Any], state: Path) -> ServerInfo | None:
    try:
        return ServerInfo(
            base_url=str(found["base_url"]),
            token=str(found["token"]),
            server_id=str(found["server_id"]),
            pid=int(found["pid"]),
            log_path=state / LOG_FILE,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _record(state: Path, info: ServerInfo, port: int) -> None:
    _write_private(
        state / DISCOVERY,
        json.dumps(
            {
                "pid": info.pid,
                "port": port,
                "base_url": info.base_url,
                "server_id": info.server_id,
                "token": info.token,
                "log_path": str(info.log_path),
                "started_at": time.time(),
            }
        ),
    )


def _last_log_line(log: Path) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4096))
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


# -- identity ----------------------------------------------------------------------------------
def _identity(base_url: str, token: str) -> dict[str, Any] | None:
    """What the server at ``base_url`` says it is, authenticated with ``token``."""
    try:
        r = httpx.get(
            base_url + IDENTITY_PATH,
            headers={"Authorization": f"Bearer {token}"},
            timeout=IDENTITY_TIMEOUT,
            trust_env=False,  # loopback: never through an HTTP(S)_PROXY, which would see the token
        )
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        body = r.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _verified(info: ServerInfo) -> bool:
    body = _identity(info.base_url, info.token)
    return (
        body is not None
        and body.get("server_id") == info.server_id
        and (body.get("pid") == info.pid)
    )


def _dead(pid: int) -> bool:
    """Gone, or a zombie whose threads have all exited (its sockets and locks are released)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError):
        return True
    if state == "Z" and threads <= 1:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return True
    return False


def _process_is(pid: int, server_id: str) -> bool:
    """Whether ``pid`` is alive and is the server launched with ``server_id`` (Linux /proc).

    Used only for a server that does not answer; elsewhere such a pid is never signalled."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return not _dead(pid) and b"letta_nb.cli" in args and server_id.encode() in args


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# -- starting ----------------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    """Make ``letta_nb`` importable in the child even when it is not pip-installed; pass no
    credentials by environment (the token travels in its 0600 file)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _launch(state: Path, host: str, port: int, token: str) -> ServerInfo:
    log = state / LOG_FILE
    port_file = state / PORT_FILE
    port_file.unlink(missing_ok=True)
    server_id = "server-" + secrets.token_hex(16)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
                str(state / DB_FILE),
                "--token-file",
                str(state / TOKEN_FILE),
                "--server-id",
                server_id,
                "--port-file",
                str(port_file),
                "--log-file",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=str(state),
            env=_child_env(),
        )
    finally:
        os.close(out)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            line = _last_log_line(log) or f"exit code {proc.returncode}"
            raise ServerStartError(f"the letta-nb server did not start: {line} (see {log})")
        with contextlib.suppress(OSError, ValueError):
            bound = int(port_file.read_text().strip())
            info = ServerInfo(f"http://{host}:{bound}", token, server_id, proc.pid, log)
            if _verified(info):
                _record(state, info, bound)
                return info
        time.sleep(POLL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise ServerStartError(
        f"the letta-nb server did not answer within {START_TIMEOUT:g} s (see {log})"
    )


def ensure_server(state_dir: Path | str, *, host: str = "127.0.0.1") -> ServerInfo:
    """The verified live server of ``state_dir``, started (or relaunched) if needed."""
    state = Path(state_dir).expanduser().resolve()
    with state_lock(state):
        _private_dir(state)
        token = _token(state)
        found = _read(state) or {}
        known = _info(found, state)
        if known is not None and known.token == token:
            if _verified(known):
                return known
            if _process_is(known.pid, known.server_id):  # alive but silent: busy or starting
                deadline = time.monotonic() + START_TIMEOUT
                while time.monotonic() < deadline and _process_is(known.pid, known.server_id):
                    if _verified(known):
                        return known
                    time.sleep(POLL * 4)
                if _process_is(known.pid, known.server_id):
                    raise ServerStartError(
                        f"the letta-nb server (pid {known.pid}) does not answer; stop it with "
                        f"`letta-nb stop` (see {state / LOG_FILE})"
                    )
        port = int(found.get("port") or 0) if isinstance(found.get("port"), int) else 0
        if port and not _port_free(host, port):
            port = 0  # someone else has it now: a new port (clients learn it on relaunch)
        try:
            return _launch(state, host, port, token)
        except ServerStartError:
            if port == 0:
                raise
            return _launch(state, host, 0, token)  # the port was taken in the meantime


def server_status(state_dir: Path | str) -> ServerInfo | None:
    """The state dir's server if it is alive and proves its identity, else None."""
    state = Path(state_dir).expanduser().resolve()
    found = _read(state)
    info = _info(found, state) if found else None
    return info if info is not None and _verified(info) else None


def stop_server(state_dir: Path | str) -> bool:
    """Stop the state dir's server (SIGTERM, then SIGKILL); True if one was running.

    Only a process that proves to be that server is signalled: one answering the identity
    check with the recorded id and pid, or (when it does not answer) a live process whose
    command line carries the recorded server id. A stale discovery file is removed.
    """
    state = Path(state_dir).expanduser().resolve()
    if not state.is_dir():
        return False
    with state_lock(state):
        found = _read(state)
        info = _info(found, state) if found else None
        (state / DISCOVERY).unlink(missing_ok=True)
        if info is None:
            return False
        if not (_verified(info) or _process_is(info.pid, info.server_id)):
            return False
        try:
            os.kill(info.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not _process_is(info.pid, info.server_id):
                return True
            time.sleep(POLL)
        if _process_is(info.pid, info.server_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        return True
