"""The attacks of issue 10 against a ``letta-nb server``, measured: what each one achieves.

Run: .venv/bin/python bench/attack_bench.py [--root PATH]

``--root`` is the checkout whose ``letta_nb`` is attacked (default: this one), so the same
script measures "before" on an old checkout (``git archive main | tar -x -C /tmp/before``) and
"after" here. It imports nothing from letta_nb: every attack goes over HTTP, a second SQLite
connection or the file system, as a hostile process on the same machine would. The disk-full
attack needs root (a 2 MiB tmpfs); without it that row says "skipped".
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
HDR = {"X-Stainless-Package-Version": "1.12.1"}


class Server:
    """A ``letta-nb server`` subprocess of the checkout under attack."""

    def __init__(self, root: Path, db: Path, *extra: str, umask: int | None = None) -> None:
        self.root, self.db = root, db
        port_file = db.with_name(db.name + ".port")
        port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA")}
        env["PYTHONPATH"] = str(root)
        cmd = [sys.executable, "-m", "letta_nb.cli", "server", "--port", "0", "--db", str(db)]
        cmd += ["--port-file", str(port_file), *extra]
        self.log = db.with_name(db.name + ".out")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=str(db.parent),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-300:]}")
            with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
                self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
                if httpx.get(self.url + "/v1/health/", timeout=1).status_code == 200:
                    self.http = httpx.Client(base_url=self.url, timeout=60, headers=HDR)
                    return
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(10)
        raise RuntimeError("server did not start")

    def agent(self, name: str = "victim") -> str:
        r = self.http.post("/v1/agents/", json={"name": name, "model": "letta_nb/demo"})
        return str(r.json()["id"])

    def bg(self, agent: str, text: str) -> str:
        r = self.http.post(
            f"/v1/agents/{agent}/messages",
            json={"messages": [{"role": "user", "content": text}], "streaming": True,
                  "background": True, "stream_tokens": True},
        )  # fmt: skip
        return r.text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def server(root: Path, *extra: str, **kw: Any) -> Iterator[Server]:
    tmp = Path(tempfile.mkdtemp(prefix="attack-"))
    srv = Server(root, tmp / "server.sqlite3", *extra, **kw)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pending_call(srv: Server, agent: str) -> str:
    srv.bg(agent, "/gated")
    got = srv.http.get(f"/v1/agents/{agent}", params={"include": "agent.pending_approval"})
    return str(got.json()["pending_approval"]["tool_calls"][0]["tool_call_id"])


def _approve(call_id: str) -> dict[str, Any]:
    item = {"type": "approval", "approvals": [{"type": "approval", "tool_call_id": call_id,
                                              "approve": True}]}  # fmt: skip
    return {"messages": [item], "streaming": True, "background": True}


def _executions(srv: Server, agent: str) -> int:
    msgs = srv.http.get(f"/v1/agents/{agent}/messages", params={"limit": 1000}).json()
    return sum(
        1
        for m in msgs
        if m.get("message_type") == "tool_return_message"
        and m.get("name") == "write_report"
        and m.get("status") == "success"
    )


# -- the attacks ---------------------------------------------------------------------------------
def cross_origin_text_plain(root: Path) -> str:
    with server(root) as srv:
        r = httpx.post(
            srv.url + "/v1/agents/",
            content=json.dumps({"name": "pwned", "model": "letta_nb/demo"}),
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        )
        made = [a["name"] for a in srv.http.get("/v1/agents/").json()].count("pwned")
        return f"{r.status_code}, {made} agent created"


def foreign_host_reads_and_approves(root: Path) -> str:
    with server(root) as srv:
        agent = srv.agent()
        srv.bg(agent, "what are the top stores?")
        call_id = _pending_call(srv, agent)
        evil = {"Host": "rebind.evil.example"}
        read = srv.http.get(f"/v1/agents/{agent}/messages", headers=evil)
        ok = srv.http.post(f"/v1/agents/{agent}/messages", json=_approve(call_id), headers=evil)
        ran = _executions(srv, agent)
        return f"read {read.status_code}, approve {ok.status_code}, tool ran {ran}x"


def _poison_trial(root: Path, name: str, raw: bytes) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="attack-"))
    db = tmp / "server.sqlite3"
    try:
        srv = Server(root, db)
        json_type = {"Content-Type": "application/json"}
        posted = _status(lambda: srv.http.post("/v1/agents/", content=raw, headers=json_type))
        listed = _status(lambda: srv.http.get("/v1/agents/"))
        srv.stop()
        again = Server(root, db)
        after_restart = _status(lambda: again.http.get("/v1/agents/"))
        again.stop()
        return f"{name}: POST {posted}, list {listed}, after restart {after_restart}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lone_surrogate_and_deep_json(root: Path) -> str:
    deep = {"name": "d", "model": "letta_nb/demo", "metadata": _deep(400)}
    return "; ".join(
        (
            _poison_trial(root, "surrogate", SURROGATE_AGENT),
            _poison_trial(root, "depth 400", json.dumps(deep).encode()),
        )
    )


SURROGATE_AGENT = b'{"name": "s", "model": "letta_nb/demo", "description": "\\ud800"}'


def _status(call: Callable[[], httpx.Response]) -> str:
    try:
        return str(call().status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def oversized_body(root: Path) -> str:
    with server(root) as srv:
        r = srv.http.post(
            "/v1/agents/",
            content=b'{"name": "big", "description": "' + b"x" * (64 << 20) + b'"}',
            headers={"Content-Type": "application/json"},
        )
        rss = psutil.Process(srv.proc.pid).memory_info().rss >> 20
        return f"64 MiB body: {r.status_code}, server RSS {rss} MiB"


def malformed_approvals(root: Path) -> str:
    with server(root) as srv:
        agent = srv.agent()
        before = srv.log.stat().st_size
        codes = []
        for item in ({"type": "approval", "approvals": [5]},
                     {"type": "tool_return", "tool_returns": [{"tool_call_id": 5}]},
                     {"type": "approval", "approvals": "x"}):  # fmt: skip
            body = {"messages": [item], "streaming": True, "background": True}
            codes.append(srv.http.post(f"/v1/agents/{agent}/messages", json=body).status_code)
        grown = srv.log.stat().st_size - before
        return f"{codes}, log +{grown} bytes"


def _race(*calls: Callable[[], Any]) -> None:
    """Run ``calls`` at once (released together by a barrier)."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> None:
        barrier.wait(30)
        call()

    with ThreadPoolExecutor(len(calls)) as pool:
        for f in [pool.submit(go, c) for c in calls]:
            f.result()


def _approval_trial(srv: Server) -> bool:
    """Ten answers to one pending call at once: did the tool run more than once?"""
    agent = srv.agent()
    call_id = _pending_call(srv, agent)
    url = f"/v1/agents/{agent}/messages"
    _race(*[lambda: srv.http.post(url, json=_approve(call_id)) for _ in range(10)])
    return _executions(srv, agent) > 1


def concurrent_approvals(root: Path, trials: int = 10) -> str:
    with server(root) as srv:
        twice = sum(_approval_trial(srv) for _ in range(trials))
    return f"tool ran more than once in {twice} of {trials} trials"


def _cancel_trial(srv: Server) -> bool:
    """Approve and cancel at once: was a denial stored while the tool ran anyway?"""
    agent = srv.agent()
    call_id = _pending_call(srv, agent)
    gate = srv.http.get("/v1/runs/", params={"agent_id": agent}).json()[0]["id"]
    _race(
        lambda: srv.http.post(f"/v1/agents/{agent}/messages", json=_approve(call_id)),
        lambda: srv.http.post(f"/v1/agents/{agent}/messages/cancel", json={"run_ids": [gate]}),
    )
    denied = any(
        m.get("message_type") == "tool_return_message" and m.get("status") == "error"
        for m in srv.http.get(f"/v1/runs/{gate}/messages").json()
    )
    return denied and _executions(srv, agent) > 0


def cancel_racing_approve(root: Path, trials: int = 10) -> str:
    with server(root) as srv:
        bad = sum(_cancel_trial(srv) for _ in range(trials))
    return f"denial stored AND tool ran in {bad} of {trials} trials"


def stalled_foreground_reader(root: Path, seconds: float = 120.0) -> str:
    with server(root) as srv:
        agent = srv.agent()
        proc = psutil.Process(srv.proc.pid)
        base = proc.memory_info().rss
        host, port = srv.url.removeprefix("http://").split(":")
        body = json.dumps({"messages": [{"role": "user", "content": "/long 1000000"}],
                           "streaming": True, "stream_tokens": True}).encode()  # fmt: skip
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            f"POST /v1/agents/{agent}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nX-Stainless-Package-Version: 1.12.1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        peak = base
        t0 = time.monotonic()
        status = "running"
        while status == "running" and time.monotonic() - t0 < seconds:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.2)
            runs = srv.http.get("/v1/runs/", params={"agent_id": agent}).json()
            status = runs[0]["status"] if runs else "running"
        sock.close()
        took = time.monotonic() - t0
        return f"RSS +{(peak - base) >> 20} MiB; run {status} after {took:.0f} s unread"


def health_while_locked(root: Path) -> str:
    with server(root) as srv:
        holder = sqlite3.connect(srv.db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        writer = threading.Thread(
            target=lambda: httpx.post(
                srv.url + "/v1/agents/", json={"model": "letta_nb/demo"}, timeout=60
            )
        )
        writer.start()
        time.sleep(0.3)  # the write is now waiting for the lock
        worst = 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            httpx.get(srv.url + "/v1/health/", timeout=60)
            worst = max(worst, time.perf_counter() - t0)
        holder.execute("ROLLBACK")
        holder.close()
        writer.join(60)
        return f"health worst {worst * 1000:.0f} ms"


def db_locked_7s_mid_run(root: Path) -> str:
    with server(root) as srv:
        agent = srv.agent()
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(srv.bg(agent, "/long 30000 0.3")))
        reader.start()
        time.sleep(1.0)
        holder = sqlite3.connect(srv.db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(7.0)
        holder.execute("ROLLBACK")
        holder.close()
        reader.join(300)
        return _stored_verdict(srv, agent)


def _stored_verdict(srv: Server, agent: str) -> str:
    runs = srv.http.get("/v1/runs/", params={"agent_id": agent}).json()
    run = runs[0]
    with contextlib.closing(sqlite3.connect(srv.db)) as con:
        rows = con.execute("SELECT seq FROM frames WHERE run_id = ? ORDER BY seq", (run["id"],))
        seqs = [r[0] for r in rows]
    holes = sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
    missing = (seqs[-1] - len(seqs)) if seqs else 0
    last = seqs[-1] if seqs else 0
    return (
        f"run {run['status']}, frames 1..{last} stored with {holes} hole(s) "
        f"({missing} missing inside)"
    )


def _quietly(call: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call(*args)


def disk_full_2mib(root: Path) -> str:
    if os.geteuid() != 0:
        return "skipped (needs root for a tmpfs)"
    mnt = Path(tempfile.mkdtemp(prefix="attack-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        srv = Server(root, mnt / "server.sqlite3")
        try:
            agent = srv.agent()
            go = threading.Thread(target=_quietly, args=(srv.bg, agent, "/long 30000 0.1"))
            go.daemon = True
            go.start()  # the reader may never see an end: do not wait for it
            time.sleep(1.0)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = srv.http.get("/v1/runs/", params={"agent_id": agent}).json()
                if runs and runs[0]["status"] != "running":
                    break
                time.sleep(0.2)
            verdict = _stored_verdict(srv, agent)
            cancel = srv.http.post(f"/v1/agents/{agent}/messages/cancel", json={}, timeout=10)
            return f"{verdict}; cancel {cancel.status_code}"
        finally:
            srv.stop()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


def second_server_same_db(root: Path) -> str:
    with server(root) as srv:
        agent = srv.agent()
        threading.Thread(target=_quietly, args=(srv.bg, agent, "/long 3000 5"), daemon=True).start()
        time.sleep(1.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA")}
        env["PYTHONPATH"] = str(root)
        second = subprocess.Popen(
            [sys.executable, "-m", "letta_nb.cli", "server", "--port", "0", "--db", str(srv.db)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _, err = second.communicate(timeout=15)
            code: Any = second.returncode
        except subprocess.TimeoutExpired:
            second.kill()
            code, err = "kept running", ""
        status = srv.http.get("/v1/runs/", params={"agent_id": agent}).json()[0]["status"]
        lines = len(err.strip().splitlines())
        return f"second server: exit {code} ({lines} stderr line(s)); first's live run: {status}"


def file_modes(root: Path) -> str:
    with server(root, umask=0o022) as srv:
        agent = srv.agent()
        srv.bg(agent, "/long 3")
        modes = {}
        for name in ("server.sqlite3", "server.sqlite3-wal", "server.sqlite3-shm"):
            path = srv.db.with_name(name)
            if path.exists():
                modes[name.removeprefix("server.sqlite3") or "db"] = oct(
                    stat.S_IMODE(path.stat().st_mode)
                )
        work = srv.db.parent / "workdirs"
        if work.exists():
            modes["workdirs"] = oct(stat.S_IMODE(work.stat().st_mode))
        return ", ".join(f"{k} {v}" for k, v in modes.items()) + " (umask 022)"


def launched_server_token(root: Path) -> str:
    code = (
        "import sys, httpx; from letta_nb.server.launcher import ensure_server, stop_server\n"
        "s = sys.argv[1]; got = ensure_server(s)\n"
        "url = got if isinstance(got, str) else got.base_url\n"
        "print(httpx.get(url + '/v1/agents/').status_code); stop_server(s)\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="attack-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA")}
        env["PYTHONPATH"] = str(root)
        out = subprocess.run([sys.executable, "-c", code, str(tmp / "server")], env=env,
                             capture_output=True, text=True, timeout=120, cwd=tmp)  # fmt: skip
        return f"GET /v1/agents/ without a token: {out.stdout.strip() or out.stderr[-200:]}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def impostor_on_recorded_port(root: Path) -> str:
    code = (
        "import os, signal, sys, time, http.server, threading, json\n"
        "from letta_nb.server.launcher import ensure_server, stop_server\n"
        "s = sys.argv[1]; got = ensure_server(s)\n"
        "url = got if isinstance(got, str) else got.base_url\n"
        "pid = json.load(open(s + '/server.json'))['pid']\n"
        "os.kill(pid, signal.SIGKILL); time.sleep(1)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
        "    def log_message(self, *a): pass\n"
        "port = int(url.rsplit(':', 1)[1])\n"
        "srv = http.server.HTTPServer(('127.0.0.1', port), H)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        "got2 = ensure_server(s); url2 = got2 if isinstance(got2, str) else got2.base_url\n"
        "print('trusted the impostor' if url2 == url else 'started a verified server elsewhere')\n"
        "stop_server(s)\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="attack-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA")}
        env["PYTHONPATH"] = str(root)
        out = subprocess.run([sys.executable, "-c", code, str(tmp / "server")], env=env,
                             capture_output=True, text=True, timeout=120, cwd=tmp)  # fmt: skip
        return out.stdout.strip() or out.stderr.strip().splitlines()[-1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ATTACKS: list[tuple[str, Callable[[Path], str]]] = [
    ("cross-origin text/plain POST creates an agent", cross_origin_text_plain),
    (
        "foreign Host (DNS rebinding) reads history, approves /gated",
        foreign_host_reads_and_approves,
    ),
    ("lone surrogate / 400-deep metadata in an agent", lone_surrogate_and_deep_json),
    ("64 MiB request body", oversized_body),
    ("malformed approvals / tool_returns bodies", malformed_approvals),
    ("10 concurrent approvals of one call (10 trials)", concurrent_approvals),
    ("cancel racing approve (10 trials)", cancel_racing_approve),
    ("stalled foreground /long 1000000 reader", stalled_foreground_reader),
    ("/v1/health/ while another connection holds the write lock", health_while_locked),
    ("write lock held 7 s by another connection mid-run", db_locked_7s_mid_run),
    ("2 MiB disk fills during /long 30000", disk_full_2mib),
    ("second server on the same DB during a live run", second_server_same_db),
    ("file modes (DB, WAL, SHM, workdirs)", file_modes),
    ("the server the launcher starts", launched_server_token),
    ("a process answering on the recorded port", impostor_on_recorded_port),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--only", default=None, help="run the attacks whose name contains this")
    args = parser.parse_args()
    root = args.root.resolve()
    print(f"attacking the letta_nb of {root}")
    for name, attack in ATTACKS:
        if args.only and args.only not in name:
            continue
        t0 = time.monotonic()
        try:
            result = attack(root)
        except Exception as exc:  # an attack that breaks the harness is a result too
            result = f"error: {type(exc).__name__}: {str(exc)[:160]}"
        print(f"{name:<62} {result}  [{time.monotonic() - t0:.1f} s]", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
