"""Client-side benchmark: letta_nb (follower + widget) against the bare `letta-client` SDK.

One command, one table (metric | letta_nb | baseline | ratio | target | ok)::

    .venv/bin/python bench/client_bench.py            # full run (~4-5 min on 2 cores)
    .venv/bin/python bench/client_bench.py --quick    # smaller sizes (~1 min)

The embedded server runs in its own process (``python -m letta_nb.cli server --port 0``), so its
CPU never shares the client's GIL. Widgets have no frontend here: every comm message ipywidgets
would send is serialised as a real Jupyter message (``jupyter_client.Session``) by a recording
comm installed as ``comm.create_comm``, and counted (messages, wire bytes). Times are medians of
interleaved repetitions; the machines are noisy, so ratios matter more than absolute numbers.

Metrics (issue 7):
1. overhead: a finished N-frame run consumed by a Follower with a RunView attached vs iterating
   ``client.runs.messages.stream(run_id, starting_after=0)`` and touching ``message_type``.
2. UI traffic: comm messages/s and bytes vs transcript size, for the fast replay of (1) and for
   live runs (``/long N`` and the paced ``/long 2000 5``). Bytes are every comm message the
   view causes, serialised as the kernel sends it: the view's opening (with its browser module)
   included. The display's text/html (sent once at display and once when the run is over, for
   saved notebooks) is not a comm message and not counted.
3. resume latency: re-running a finished / running cell (``Session.send`` with the same key), in
   the same kernel and after a simulated kernel restart → first resumed frame rendered.
4. time to first frame of a ``%%letta`` cell (IPython's globalipapp, ``run_cell_magic``).
5. memory: RSS growth of a fresh process that follows a 1,000,000-frame run through a Session
   with a RunView attached, vs the transcript's size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import machine_notes, rss_bytes, server_process

from letta_nb.protocol import FINAL_RUN_STATUSES

#: The versions printed under the table.
PACKAGES = (
    "letta_nb",
    "letta-client",
    "httpx",
    "pydantic",
    "ipywidgets",
    "comm",
    "ipykernel",
    "IPython",
)


# ---- sizes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    overhead_frames: int
    overhead_reps: int
    live_tokens: int
    paced_tokens: int
    resume_reps: int
    ttff_reps: int
    memory_frames: int


FULL = Sizes(
    overhead_frames=100_000,
    overhead_reps=3,
    live_tokens=100_000,
    paced_tokens=2_000,
    resume_reps=7,
    ttff_reps=9,
    memory_frames=1_000_000,
)
QUICK = Sizes(
    overhead_frames=20_000,
    overhead_reps=3,
    live_tokens=20_000,
    # (as long as the full run's: the bytes-per-transcript target counts the view's opening
    # message and ~0.6 kB of envelope a second, which a 3-second transcript cannot carry)
    paced_tokens=2_000,
    resume_reps=5,
    ttff_reps=5,
    memory_frames=200_000,
)


# ---- the server in its own process ---------------------------------------------------------


def finished_run(backend: Any, agent_id: str, message: str, timeout: float = 600.0) -> str:
    """Start a background run, learn its id from the first frame, wait until it is final."""
    from letta_nb.backend import new_otid

    stream = backend.start(agent_id, [{"role": "user", "content": message}], otid=new_otid())
    run_id = None
    try:
        for chunk in stream:
            if chunk.run_id:
                run_id = chunk.run_id
                break
    finally:
        stream.close()
    if run_id is None:
        raise RuntimeError(f"no run id for {message!r}")
    deadline = time.monotonic() + timeout
    while backend.get_run(run_id).get("status") not in FINAL_RUN_STATUSES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish in {timeout} s")
        time.sleep(0.1)
    return run_id


# ---- comm layer: count what the frontend would receive -------------------------------------
class CommRecorder:
    """Replaces `comm.create_comm`; every message is serialised as the kernel would send it."""

    def __init__(self, keep_events: bool = True) -> None:
        from jupyter_client.session import Session

        self._session = Session(key=b"bench-signing-key")
        # A real cell's execute_request header rides along as parent_header in a kernel.
        self._parent = self._session.msg("execute_request", {"code": ""})
        self._lock = threading.Lock()
        self.keep_events = keep_events
        self.events: list[tuple[float, str, int]] = []
        self.messages = 0
        self.bytes = 0

    def install(self) -> None:
        import comm
        from comm.base_comm import BaseComm

        recorder = self

        class RecordingComm(BaseComm):
            def publish_msg(
                self,
                msg_type: str,
                data: Any = None,
                metadata: Any = None,
                buffers: Any = None,
                **keys: Any,
            ) -> None:
                content = dict(data=data or {}, comm_id=self.comm_id, **keys)
                recorder.record(msg_type, content, metadata or {}, buffers)

        def create_comm(*args: Any, **kwargs: Any) -> BaseComm:
            return RecordingComm(*args, **kwargs)

        comm.create_comm = create_comm

    def record(
        self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: Any
    ) -> None:
        msg = self._session.msg(msg_type, content, parent=self._parent, metadata=metadata)
        size = sum(len(part) for part in self._session.serialize(msg))
        for buf in buffers or ():
            size += memoryview(buf).nbytes
        now = time.perf_counter()
        with self._lock:
            self.messages += 1
            self.bytes += size
            if self.keep_events:
                self.events.append((now, msg_type, size))

    def window(self, start: float, end: float) -> list[tuple[float, str, int]]:
        with self._lock:
            return [e for e in self.events if start <= e[0] <= end]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.messages = self.bytes = 0


def traffic(events: list[tuple[float, str, int]], start: float, end: float) -> dict[str, float]:
    """Messages, bytes, average and peak-1s rates of the comm events between start and end."""
    duration = max(end - start, 1e-9)
    updates = [e for e in events if e[1] == "comm_msg"]
    peak = 0
    times = [e[0] for e in events]
    j = 0
    for i, t in enumerate(times):  # sliding 1 s window
        while times[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    # Sustained rate: comm_msg updates per whole 1 s bucket, median, without the first and last
    # bucket (view creation and the final status flush are one-time messages).
    buckets = [0] * (int(duration) + 1)
    for e in updates:
        buckets[min(int(e[0] - start), len(buckets) - 1)] += 1
    inner = buckets[1 : int(duration)] or buckets
    return {
        "messages": len(events),
        "updates": len(updates),
        "sustained_per_s": float(statistics.median(inner)),
        "opens": sum(1 for e in events if e[1] == "comm_open"),
        "bytes": sum(e[2] for e in events),
        "seconds": duration,
        "per_s": len(events) / duration,
        "updates_per_s": len(updates) / duration,
        "peak_1s": peak,
    }


# ---- flush hook: when did a view render what ----------------------------------------------
class FlushLog:
    """Wraps `RunView.flush` (bench-only) to log (time, rendered last_seq, document items,
    status) each time a view brought the browser up to date."""

    def __init__(self) -> None:
        self.log: dict[int, list[tuple[float, int, int, str]]] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        from letta_nb.widgets.run_view import RunView

        original = RunView.flush
        hook = self

        def flush(view: Any) -> None:
            f = view.chain
            seq = int(getattr(f, "last_seq", 0) or 0)  # read before: what this flush shows
            status = str(getattr(f, "status", ""))
            original(view)
            now = time.perf_counter()
            with hook._lock:
                hook.log.setdefault(id(view), []).append(
                    (now, seq, len(view.document["e"]), status)
                )

        RunView.flush = flush  # type: ignore[method-assign]

    def of(self, view: Any) -> list[tuple[float, int, int, str]]:
        with self._lock:
            return list(self.log.get(id(view), ()))

    def wait(
        self, view: Any, pred: Callable[[tuple[float, int, int, str]], bool], timeout: float
    ) -> float | None:
        """Time of the first flush of `view` satisfying `pred` (polls; None on timeout)."""
        deadline = time.perf_counter() + timeout
        while True:
            for entry in self.of(view):
                if pred(entry):
                    return entry[0]
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.0005)

    def forget(self, view: Any) -> None:
        with self._lock:
            self.log.pop(id(view), None)


def transcript_bytes(transcript: Any) -> int:
    from letta_nb.core.render import render_text

    return len(render_text(transcript).encode())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- 1 + 2a: overhead and the fast replay's traffic ----------------------------------------
def consume_bare(client: Any, run_id: str) -> int:
    count = 0
    for chunk in client.runs.messages.stream(run_id, starting_after=0):
        _ = chunk.message_type
        count += 1
    return count


def consume_lnb(backend: Any, agent_id: str, run_id: str, flushes: FlushLog) -> tuple[Any, Any]:
    """Follow the finished run with a RunView attached; return once the final state is drawn."""
    from letta_nb.run import Follower
    from letta_nb.widgets import RunView

    follower = Follower(backend, agent_id=agent_id)
    view = RunView(follower)
    follower.follow(run_id)
    status = follower.wait(600)
    if flushes.wait(view, lambda e: e[3] == status, 30.0) is None:
        raise RuntimeError("the view never drew the final status")
    return follower, view


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_overhead(
    url: str,
    backend: Any,
    agent_id: str,
    sizes: Sizes,
    rec: CommRecorder,
    flushes: FlushLog,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from letta_client import Letta

    client = Letta(base_url=url)
    n = sizes.overhead_frames
    say(f"overhead: generating a finished /long {n} run ...")
    warm = finished_run(backend, agent_id, "/long 2000")
    run_id = finished_run(backend, agent_id, f"/long {n}")
    consume_bare(client, warm)  # warm-up: imports, TypeAdapter caches, connections
    _f, v = consume_lnb(backend, agent_id, warm, flushes)
    v.close()
    bare_wall: list[float] = []
    bare_cpu: list[float] = []
    lnb_wall: list[float] = []
    lnb_cpu: list[float] = []
    replays: list[dict[str, float]] = []
    frames = 0
    for rep in range(sizes.overhead_reps):
        order = ("bare", "lnb") if rep % 2 == 0 else ("lnb", "bare")
        for which in order:
            if which == "bare":
                wall, cpu, count = timed(lambda: consume_bare(client, run_id))
                bare_wall.append(wall)
                bare_cpu.append(cpu)
                frames = count
                say(
                    f"  rep {rep + 1} bare     {wall:6.2f} s wall {cpu:6.2f} s cpu ({count} frames)"
                )
            else:
                rec.clear()
                start = time.perf_counter()
                wall, cpu, (f, view) = timed(
                    lambda: consume_lnb(backend, agent_id, run_id, flushes)
                )
                end = time.perf_counter()
                stats = traffic(rec.window(start, end), start, end)
                stats["transcript_bytes"] = transcript_bytes(f.transcript)
                replays.append(stats)
                lnb_wall.append(wall)
                lnb_cpu.append(cpu)
                say(
                    f"  rep {rep + 1} letta_nb {wall:6.2f} s wall {cpu:6.2f} s cpu "
                    f"({f.frames} frames, {f.status}, {stats['messages']} comm msgs, "
                    f"{view.flushes} flushes)"
                )
                view.close()
                flushes.forget(view)
    best = sorted(replays, key=lambda s: s["seconds"])[len(replays) // 2]
    return {
        "frames": frames,
        "run_id": run_id,
        "bare_wall": bare_wall,
        "bare_cpu": bare_cpu,
        "lnb_wall": lnb_wall,
        "lnb_cpu": lnb_cpu,
        "replay": best,
    }


# ---- 2b: a live paced run ------------------------------------------------------------------
def bench_live(
    backend: Any,
    agent_id: str,
    message: str,
    rec: CommRecorder,
    flushes: FlushLog,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Start `message` and follow it live with a RunView; comm traffic of the whole run."""
    from letta_nb.run import Follower
    from letta_nb.widgets import RunView

    say(f"live traffic: {message} ...")
    rec.clear()
    start = time.perf_counter()
    follower = Follower(backend, agent_id=agent_id)
    view = RunView(follower)
    follower.start([{"role": "user", "content": message}])
    status = follower.wait(600)
    flushes.wait(view, lambda e: e[3] == status, 30.0)
    end = time.perf_counter()
    stats = traffic(rec.window(start, end), start, end)
    stats["transcript_bytes"] = transcript_bytes(follower.transcript)
    stats["frames"] = follower.frames
    stats["flushes"] = view.flushes
    stats["message"] = message
    say(
        f"  {stats['seconds']:.1f} s, {stats['messages']} comm msgs ({stats['opens']} opens; "
        f"{stats['per_s']:.1f}/s, updates {stats['updates_per_s']:.1f}/s, peak "
        f"{stats['peak_1s']}/s), {stats['bytes']:,} B for a "
        f"{stats['transcript_bytes']:,} B transcript"
    )
    view.close()
    flushes.forget(view)
    return stats


# ---- 3: resume latency ---------------------------------------------------------------------
def _new_session(backend: Any, agent: dict[str, Any], store_path: Path) -> Any:
    from letta_nb.core.cursor import CursorStore
    from letta_nb.session import Session

    return Session(backend, agent=agent, store=CursorStore(store_path))


def bench_resume(
    url: str,
    agent: dict[str, Any],
    sizes: Sizes,
    workdir: Path,
    flushes: FlushLog,
    say: Callable[[str], None],
) -> dict[str, list[float]]:
    from letta_nb.backend import Backend
    from letta_nb.widgets import RunView

    say("resume latency ...")
    out: dict[str, list[float]] = {
        "finished_same": [],
        "finished_restart": [],
        "running_same": [],
        "running_restart": [],
        "running_restart_chain": [],
    }
    store = workdir / "cursors.db"
    kernel = _new_session(Backend(url), agent, store)
    views: list[Any] = []

    def rendered(
        view: Any, pred: Callable[[tuple[float, int, int, str]], bool], t0: float
    ) -> float:
        t = flushes.wait(view, pred, 30.0)
        views.append(view)
        return float("nan") if t is None else (t - t0) * 1000.0

    for rep in range(sizes.resume_reps):
        # a finished cell: same kernel, then a fresh kernel reading the cursor file
        msg = "/long 300"
        key = f"bench:finished:{rep}"
        first = kernel.send(msg, key=key, new=True)
        first.wait(60)
        time.sleep(0.05)  # the cursor write on the status change
        # a finished cell's whole document travels in the view's comm_open: built = shown
        t0 = time.perf_counter()
        view = RunView(kernel.send(msg, key=key))
        out["finished_same"].append((time.perf_counter() - t0) * 1000.0)
        views.append(view)
        fresh = _new_session(Backend(url), agent, store)
        fresh.backend._client.health()  # a restarted kernel reconnects before the cell runs
        t0 = time.perf_counter()
        view = RunView(fresh.send(msg, key=key))
        out["finished_restart"].append((time.perf_counter() - t0) * 1000.0)
        views.append(view)

        # a running cell: same kernel (live follower), then a fresh kernel (resume by seq)
        msg = "/long 4000 2"
        key = f"bench:running:{rep}"
        live = kernel.send(msg, key=key, new=True)
        deadline = time.monotonic() + 30
        while live.follower.last_seq < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen = live.follower.last_seq
        t0 = time.perf_counter()
        view = RunView(kernel.send(msg, key=key))
        out["running_same"].append(rendered(view, lambda e, s=seen: e[1] > s, t0))
        live.detach()  # the old kernel goes away; its cursor says where it was
        time.sleep(0.05)
        cursor = kernel.store.get(live.key)
        seen = cursor.last_seq if cursor else 0
        fresh = _new_session(Backend(url), agent, store)
        fresh.backend._client.health()
        t0 = time.perf_counter()
        handle = fresh.send(msg, key=key)
        view = RunView(handle)
        out["running_restart"].append(rendered(view, lambda e, s=seen: e[1] > s, t0))
        handle.cancel()
        handle.wait(10)
        # the same without a view: when the resumed chain itself has its next new frame
        key = f"bench:chain:{rep}"
        live = kernel.send(msg, key=key, new=True)
        deadline = time.monotonic() + 30
        while live.follower.last_seq < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        live.detach()
        time.sleep(0.05)
        cursor = kernel.store.get(live.key)
        seen = cursor.last_seq if cursor else 0
        fresh = _new_session(Backend(url), agent, store)
        fresh.backend._client.health()
        arrived = threading.Event()
        at: list[float] = []

        def first_new(
            f: Any, s: int = seen, at: list[float] = at, arrived: threading.Event = arrived
        ) -> None:
            if f.last_seq > s and not arrived.is_set():
                at.append(time.perf_counter())
                arrived.set()

        t0 = time.perf_counter()
        handle = fresh.send(msg, key=key)
        handle.follower.add_listener(first_new)
        arrived.wait(30)
        out["running_restart_chain"].append((at[0] - t0) * 1000.0 if at else float("nan"))
        handle.cancel()
        handle.wait(10)
    for view in views:
        view.close()
        flushes.forget(view)
    for name, values in out.items():
        say(f"  {name:17s} " + " ".join(f"{v:6.1f}" for v in values) + " ms")
    return out


# ---- 4: time to first frame of a %%letta cell ------------------------------------------------
def bench_ttff(
    url: str, sizes: Sizes, flushes: FlushLog, say: Callable[[str], None]
) -> list[float]:
    from IPython.testing import globalipapp

    from letta_nb.widgets.run_view import RunView

    say("%%letta time to first frame ...")
    ip = globalipapp.get_ipython()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        ip.run_line_magic("load_ext", "letta_nb")
        ip.run_line_magic("letta", f"connect {url}")
    created: list[Any] = []
    built: list[float] = []
    original_init = RunView.__init__

    def init(view: Any, *args: Any, **kwargs: Any) -> None:
        created.append(view)
        begin = time.perf_counter()
        original_init(view, *args, **kwargs)
        built.append((time.perf_counter() - begin) * 1000.0)

    RunView.__init__ = init  # type: ignore[method-assign]
    out: list[float] = []
    construct: list[float] = []
    try:
        for rep in range(sizes.ttff_reps + 1):
            created.clear()
            built.clear()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                t0 = time.perf_counter()
                ip.run_cell_magic("letta", "--new", "/long 50")
            if not created:
                raise RuntimeError(f"%%letta showed no view: {sink.getvalue()[-500:]}")
            view = created[-1]
            t = flushes.wait(view, lambda e: e[2] > 0 and e[1] > 1, 30.0)
            if rep > 0:  # the first cell also connects the SDK's pool: warm-up
                out.append(float("nan") if t is None else (t - t0) * 1000.0)
                construct.append(built[-1] if built else float("nan"))
            view.source.wait(30)
            view.close()
            flushes.forget(view)
    finally:
        RunView.__init__ = original_init  # type: ignore[method-assign]
    say(
        "  "
        + " ".join(f"{v:6.1f}" for v in out)
        + " ms (of which building the RunView: "
        + " ".join(f"{v:.1f}" for v in construct)
        + " ms)"
    )
    return out


# ---- 5: memory, in a fresh process -----------------------------------------------------------


def memory_child(url: str, frames: int, state: str) -> None:
    """Runs in a fresh interpreter: follow a `frames`-frame run through a Session + RunView."""
    os.environ["LETTA_NB_STATE_DIR"] = state
    rec = CommRecorder(keep_events=False)
    rec.install()
    flushes = FlushLog()
    flushes.install()
    import letta_nb
    from letta_nb.widgets import RunView

    session = letta_nb.connect(url)
    warm = session.send("/long 2000", key="mem:warm")  # imports, pools, caches, widgets
    view = RunView(warm)
    warm.wait(120)
    flushes.wait(view, lambda e, h=warm: e[3] == h.status, 30.0)
    view.close()
    del view, warm
    gc.collect()
    before = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    handle = session.send(f"/long {frames - 4}", key="mem:big")
    view = RunView(handle)
    status = handle.wait(3600)
    flushes.wait(view, lambda e: e[3] == status, 60.0)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tr = handle.follower.transcript
    text_chars = sum(len(e.text) for e in tr.entries)
    print(
        json.dumps(
            {
                "status": status,
                "frames": handle.follower.frames,
                "seconds": seconds,
                "rss_before": before,
                "rss_after": after,
                "peak_before": peak_before,
                "peak": peak,
                "transcript_chars": text_chars,
                "transcript_bytes": transcript_bytes(tr),
                "comm_messages": rec.messages,
                "comm_bytes": rec.bytes,
            }
        )
    )


def bench_memory(
    url: str, sizes: Sizes, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    say(f"memory: a fresh process follows a {sizes.memory_frames:,}-frame run ...")
    state = workdir / "mem-state"
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", url, str(sizes.memory_frames), str(state)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = result["rss_after"] - result["rss_before"]
    say(
        f"  {result['frames']:,} frames in {result['seconds']:.1f} s; RSS +{growth / 1e6:.1f} MB "
        f"(peak +{(result['peak'] - result['rss_before']) / 1e6:.1f} MB) for a "
        f"{result['transcript_bytes'] / 1e6:.1f} MB transcript"
    )
    return result


# ---- report --------------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    lnb: str
    baseline: str
    ratio: str
    target: str
    ok: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(
        self, metric: str, lnb: str, baseline: str, ratio: str, target: str, ok: bool | None
    ) -> None:
        mark = "–" if ok is None else ("yes" if ok else "NO")
        self.rows.append(Row(metric, lnb, baseline, ratio, target, mark))

    def text(self) -> str:
        head = Row("metric", "letta_nb", "baseline", "ratio", "target", "ok")
        rows = [head, *self.rows]
        cols = list(
            zip(
                *[(r.metric, r.lnb, r.baseline, r.ratio, r.target, r.ok) for r in rows], strict=True
            )
        )
        widths = [max(len(c) for c in col) for col in cols]
        lines = []
        for i, r in enumerate(rows):
            cells = (r.metric, r.lnb, r.baseline, r.ratio, r.target, r.ok)
            lines.append(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
            if i == 0:
                lines.append("-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [
            "| metric | letta_nb | baseline | ratio | target | ok |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.metric} | {r.lnb} | {r.baseline} | {r.ratio} | {r.target} | {r.ok} |"
            )
        return "\n".join(lines)


def traffic_rows(rep: Report, label: str, t: dict[str, Any]) -> None:
    rep.add(
        f"UI msgs/s sustained, {label} ({t['seconds']:.1f} s)",
        f"{t['sustained_per_s']:.0f} (avg {t['per_s']:.1f} incl. {t['opens']} opens; "
        f"peak {t['peak_1s']})",
        "",
        "",
        "<= 10",
        t["sustained_per_s"] <= 10,
    )
    size = t["transcript_bytes"]
    rep.add(
        f"UI bytes / transcript, {label}",
        f"{t['bytes']:,} B",
        f"{size:,} B",
        f"{t['bytes'] / size:.2f}x",
        "<= 1.5x",
        t["bytes"] <= 1.5 * size,
    )


def build_report(res: dict[str, Any]) -> Report:
    rep = Report()
    ov = res.get("overhead")
    if ov:
        lw, bw = median(ov["lnb_wall"]), median(ov["bare_wall"])
        lc, bc = median(ov["lnb_cpu"]), median(ov["bare_cpu"])
        n = ov["frames"]
        rep.add(
            f"overhead, {n:,}-frame replay, wall (median)",
            f"{lw:.2f} s",
            f"{bw:.2f} s",
            f"{lw / bw:.2f}x",
            "<= 1.15x",
            lw / bw <= 1.15,
        )
        rep.add(
            "overhead, client CPU (median)",
            f"{lc:.2f} s",
            f"{bc:.2f} s",
            f"{lc / bc:.2f}x",
            "<= 1.15x",
            lc / bc <= 1.15,
        )
        rep.add("throughput, frames/s (median)", f"{n / lw:,.0f}", f"{n / bw:,.0f}", "", "", None)
        traffic_rows(rep, f"fast replay of the {n:,}-frame run", ov["replay"])
    for key, label in (("live", "live run"), ("paced", "live paced run")):
        if res.get(key):
            traffic_rows(rep, f"{label} {res[key]['message']}", res[key])
    rs = res.get("resume")
    if rs:
        labels = {
            "finished_same": "resume, finished cell, same kernel",
            "finished_restart": "resume, finished cell, after restart",
            "running_same": "resume, running cell, same kernel",
            "running_restart": "resume, running cell, after restart",
        }
        for key, label in labels.items():
            m = median(rs[key])
            rep.add(f"{label} (median)", f"{m:.1f} ms", "", "", "<= 30 ms", m <= 30)
        if rs.get("running_restart_chain"):
            view, chain = median(rs["running_restart"]), median(rs["running_restart_chain"])
            rep.add(
                "  of which the chain's own resume (no view; median)",
                f"{chain:.1f} ms",
                "",
                f"view adds {view - chain:.1f} ms",
                "",
                None,
            )
    tt = res.get("ttff")
    if tt:
        m = median(tt)
        rep.add("%%letta time to first frame (median)", f"{m:.1f} ms", "", "", "<= 50 ms", m <= 50)
    mem = res.get("memory")
    if mem:
        growth = mem["rss_after"] - mem["rss_before"]
        size = mem["transcript_bytes"]
        rep.add(
            f"RSS growth, {mem['frames']:,}-frame run",
            f"{growth / 1e6:.1f} MB",
            f"{size / 1e6:.1f} MB transcript",
            f"{growth / size:.2f}x",
            "<= 2x",
            growth <= 2 * size,
        )
        peak = mem["peak"] - mem["rss_before"]
        rep.add(
            "RSS peak growth, same run", f"{peak / 1e6:.1f} MB", "", f"{peak / size:.2f}x", "", None
        )
    return rep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~1 min)")
    parser.add_argument(
        "--only",
        default="overhead,live,resume,ttff,memory",
        help="comma-separated subset of overhead,live,resume,ttff,memory",
    )
    parser.add_argument("--reps", type=int, default=None, help="overhead repetitions each")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("URL", "FRAMES", "STATE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        url, frames, state = args.memory_child
        memory_child(url, int(frames), state)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = Sizes(**{**sizes.__dict__, "overhead_reps": args.reps})
    only = set(args.only.split(","))
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    notes = machine_notes(PACKAGES)
    for line in notes:
        say(line)
    rec = CommRecorder()
    rec.install()
    flushes = FlushLog()
    flushes.install()
    os.environ.pop("LETTA_API_KEY", None)
    results: dict[str, Any] = {"sizes": sizes.__dict__, "notes": notes}
    with tempfile.TemporaryDirectory(prefix="lnb-client-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["LETTA_NB_STATE_DIR"] = str(workdir / "state")
        with server_process(workdir) as (url, _pid):
            from letta_nb.backend import Backend

            say(f"server {url} (separate process)")
            backend = Backend(url)
            agent = backend.create_agent("bench-agent")
            if "overhead" in only:
                results["overhead"] = bench_overhead(
                    url, backend, agent["id"], sizes, rec, flushes, say
                )
            if "live" in only:
                results["live"] = bench_live(
                    backend, agent["id"], f"/long {sizes.live_tokens}", rec, flushes, say
                )
                results["paced"] = bench_live(
                    backend, agent["id"], f"/long {sizes.paced_tokens} 5", rec, flushes, say
                )
            if "resume" in only:
                results["resume"] = bench_resume(url, agent, sizes, workdir, flushes, say)
            if "ttff" in only:
                results["ttff"] = bench_ttff(url, sizes, flushes, say)
            if "memory" in only:
                results["memory"] = bench_memory(url, sizes, workdir, say)
    results["notes"] = [*notes, machine_notes(PACKAGES)[0].replace("cpus", "at the end: cpus")]
    results["seconds"] = time.perf_counter() - started
    report = build_report(results)
    print()
    print(report.markdown() if args.markdown else report.text())
    print()
    for line in results["notes"]:
        print(f"- {line}")
    print(
        f"- total {results['seconds']:.0f} s ({'--quick' if args.quick else 'full'} sizes: "
        f"{sizes.__dict__})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
