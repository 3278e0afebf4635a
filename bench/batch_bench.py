"""Batch benchmark: `lnb.map` against a bare letta-client thread pool doing the same sends.

One command, one table (metric | letta_nb | baseline | ratio | target | ok)::

    .venv/bin/python bench/batch_bench.py                                  # 1,000 items, 16 at once
    .venv/bin/python bench/batch_bench.py --items 200 --concurrency 8 --reps 1     # ~30 s
    .venv/bin/python bench/batch_bench.py --profile        # + where the batch side's time goes

The embedded server runs in its own process (``python -m letta_nb.cli server --port 0``, as the
detached launcher starts it) and every measured side runs in a fresh child process of its own,
so neither shares a GIL with the server or inherits the other's memory. Sides are interleaved
(``--reps`` times each); times are medians.

* **letta_nb**: ``lnb.map(messages, agent=..., concurrency=C)`` then ``batch.wait()``: the
  batch's runner, one run chain (``run.Follower``) per item in flight, the cursor store on disk.
* **baseline**: what a careful hand-written loop does with ``letta-client`` and a
  ``ThreadPoolExecutor(C)``: per item, create a conversation (the batch gives each item a
  conversation of its own), send the message in background mode with an otid, and stream to
  its end, keeping the answer text.

Items are the demo brain's ``/long K`` (K assistant deltas + 4 frames). Memory: RSS of each
timed child before the batch and after it (gc'd, the batch still held), and, in separate
children under ``tracemalloc``, the bytes the batch side retains per item with K and with 10×K
frames per answer: per-item state, not per-frame, keeps that flat but for the longer answer
text itself.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, machine_notes, rss_bytes, server_process

#: The versions printed under the table.
PACKAGES = ("letta_nb", "letta-client", "httpx", "pydantic", "pandas")

WAIT_BOUND = 1800.0  # seconds: one side's whole batch, never unbounded


# ---- the server in its own process ---------------------------------------------------------


def expected_answer(tokens: int) -> str:
    from letta_nb.server.brains.demo import long_token

    return "".join(long_token(i) for i in range(1, tokens + 1))


# ---- a sampling profiler (py-spy is not available here) ------------------------------------
#: Leaf functions of a thread that waits (a socket read, a select, a lock), not computes.
IDLE = frozenset(
    {
        "sync.py:read",  # httpcore's blocking socket read (the server has not answered yet)
        "socket.py:readinto",
        "selectors.py:select",
        "threading.py:_wait_for_tstate_lock",
        "queue.py:get",
    }
)


class Sampler:
    """Samples every thread's stack every `interval` s (sys._current_frames): the functions
    most often on the stack (inclusive) and at its top (self), over the batch's threads."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.leaf: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack = traceback.extract_stack(frame)
                if not stack:
                    continue
                names = [f"{Path(f.filename).name}:{f.name}" for f in stack]
                if names[-1] in IDLE or names[-1].endswith(":wait"):
                    continue  # blocked on a lock or a socket: not where CPU time goes
                self.samples += 1
                self.leaf[f"{names[-1]}:{stack[-1].lineno}"] += 1
                for name in set(names):
                    self.inclusive[name] += 1

    def report(self, top: int = 25) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "self": self.leaf.most_common(top),
            "inclusive": self.inclusive.most_common(top),
        }


# ---- the two sides (each in a child process) -----------------------------------------------
def lnb_side(url: str, agent_id: str, n: int, c: int, tokens: int, opts: dict[str, Any]) -> dict:
    import letta_nb as lnb

    lnb.connect(url)
    # Warm-up, like the baseline's: a small batch loads what a first batch loads (pandas for
    # the frame, the runner's modules) so the figures are per item, not per process.
    warm = lnb.map([f"/long {tokens}"] * 2, agent=agent_id, key=f"warm-{uuid.uuid4()}")
    assert warm.wait(60) == "done", warm.counts
    warm.frame  # noqa: B018 - builds the frame once (its imports)
    messages = [f"/long {tokens}"] * n
    sampler = Sampler() if opts.get("profile") else None
    gc.collect()
    traced0 = _traced()
    rss0 = rss_bytes()
    if sampler:
        sampler.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    batch = lnb.map(messages, agent=agent_id, concurrency=c, key=f"bench-{uuid.uuid4()}")
    status = batch.wait(WAIT_BOUND)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if sampler:
        sampler.stop()
    gc.collect()
    traced1 = _traced()
    rss1 = rss_bytes()
    counts = batch.counts
    want = expected_answer(tokens)
    answers = [item.answer for item in batch.items]
    result = {
        "wall": wall,
        "status": status,
        "counts": counts,
        "right": sum(a == want for a in answers),
        "rss_before": rss0,
        "rss_after": rss1,
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cpu": time.process_time(),
        "cpu_batch": cpu,
        "answer_bytes": sum(sys.getsizeof(a) for a in answers if a) / max(1, n),
    }
    if traced0 is not None and traced1 is not None:
        result["traced_before"], result["traced_after"] = traced0, traced1
        result["traced_peak"] = _traced_peak()
    if sampler:
        result["profile"] = sampler.report()
    del batch
    return result


def bare_side(url: str, agent_id: str, n: int, c: int, tokens: int, opts: dict[str, Any]) -> dict:
    from letta_client import Letta

    client = Letta(base_url=url, max_retries=0)

    def one(message: str) -> str:
        """What a careful loop does per item: its own conversation, an otid, background mode,
        read to the end of the stream (the answer kept, frames dropped)."""
        item = {"role": "user", "content": message, "otid": f"otid-{uuid.uuid4()}"}
        conv = client.conversations.create(agent_id=agent_id)
        stream: Any = client.conversations.messages.create(
            conv.id,
            messages=[item],  # type: ignore[list-item]
            streaming=True,
            background=True,
            stream_tokens=True,
            include_pings=True,
        )
        parts = []
        for frame in stream:
            if getattr(frame, "message_type", None) == "assistant_message":
                parts.append(frame.content if isinstance(frame.content, str) else "")
        return "".join(parts)

    assert one(f"/long {tokens}") == expected_answer(tokens)  # warm-up, like the batch side
    messages = [f"/long {tokens}"] * n
    gc.collect()
    traced0 = _traced()
    rss0 = rss_bytes()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(c) as pool:
        answers = list(pool.map(one, messages))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gc.collect()
    traced1 = _traced()
    want = expected_answer(tokens)
    result = {
        "wall": wall,
        "status": "done",
        "counts": {"completed": n},
        "right": sum(a == want for a in answers),
        "rss_before": rss0,
        "rss_after": rss_bytes(),
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cpu": time.process_time(),
        "cpu_batch": cpu,
        "answer_bytes": sum(sys.getsizeof(a) for a in answers) / max(1, n),
    }
    if traced0 is not None and traced1 is not None:
        result["traced_before"], result["traced_after"] = traced0, traced1
        result["traced_peak"] = _traced_peak()
    return result


def _traced() -> int | None:
    import tracemalloc

    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None


def _traced_peak() -> int:
    import tracemalloc

    return tracemalloc.get_traced_memory()[1]


SIDES: dict[str, Callable[..., dict]] = {"lnb": lnb_side, "bare": bare_side}


def child(argv: list[str]) -> int:
    side, url, agent_id, n, c, tokens, opts_json = argv
    opts = json.loads(opts_json)
    if opts.get("trace"):
        import tracemalloc

        tracemalloc.start()
    state = tempfile.mkdtemp(prefix="lnb-batch-bench-state-")
    os.environ["LETTA_NB_STATE_DIR"] = state  # a fresh cursor store per child
    result = SIDES[side](url, agent_id, int(n), int(c), int(tokens), opts)
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # the batch side's daemon threads are done; skip interpreter teardown


def run_child(
    side: str, url: str, agent_id: str, n: int, c: int, tokens: int, **opts: Any
) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            side,
            url,
            agent_id,
            str(n),
            str(c),
            str(tokens),
            json.dumps(opts),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_BOUND + 120,
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{side} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


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

    def _cells(self, r: Row) -> tuple[str, ...]:
        return (r.metric, r.lnb, r.baseline, r.ratio, r.target, r.ok)

    def text(self) -> str:
        rows = [Row("metric", "letta_nb", "baseline", "ratio", "target", "ok"), *self.rows]
        widths = [max(len(c) for c in col) for col in zip(*map(self._cells, rows), strict=True)]
        lines = []
        for i, r in enumerate(rows):
            lines.append(
                " | ".join(c.ljust(w) for c, w in zip(self._cells(r), widths, strict=True))
            )
            if i == 0:
                lines.append("-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [
            "| metric | letta_nb | baseline | ratio | target | ok |",
            "|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        return "\n".join(lines)


def build_report(res: dict[str, Any]) -> Report:
    rep = Report()
    n, c = res["items"], res["concurrency"]
    lw = statistics.median(r["wall"] for r in res["lnb"])
    bw = statistics.median(r["wall"] for r in res["bare"])
    rep.add(
        f"wall, {n:,} items at concurrency {c} (median of {len(res['lnb'])})",
        f"{lw:.2f} s",
        f"{bw:.2f} s",
        f"{lw / bw:.2f}x",
        "<= 1.1x",
        lw / bw <= 1.1,
    )
    rep.add("items/s (median)", f"{n / lw:.1f}", f"{n / bw:.1f}", "", "", None)
    for field_name, label in (
        ("cpu_batch", "client CPU during the batch (median)"),
        ("cpu", "client CPU, whole child incl. imports (median)"),
    ):
        lc = statistics.median(r[field_name] for r in res["lnb"])
        bc = statistics.median(r[field_name] for r in res["bare"])
        rep.add(label, f"{lc:.2f} s", f"{bc:.2f} s", f"{lc / bc:.2f}x", "", None)
    sc = res.get("server_cpu")
    if sc:
        ls, bs = statistics.median(sc["lnb"]), statistics.median(sc["bare"])
        rep.add(
            "server CPU per side (median)",
            f"{ls:.2f} s",
            f"{bs:.2f} s",
            f"{ls / bs:.2f}x",
            "",
            None,
        )
    ok_l = all(r["right"] == n and r["status"] == "done" for r in res["lnb"])
    ok_b = all(r["right"] == n for r in res["bare"])
    rep.add(
        "answers complete and exact",
        f"{min(r['right'] for r in res['lnb']):,}/{n:,}",
        f"{min(r['right'] for r in res['bare']):,}/{n:,}",
        "",
        "all",
        ok_l and ok_b,
    )
    lg = statistics.median((r["rss_after"] - r["rss_before"]) / n for r in res["lnb"])
    bg = statistics.median((r["rss_after"] - r["rss_before"]) / n for r in res["bare"])
    rep.add(
        "RSS growth per item (median)", f"{lg / 1e3:.1f} kB", f"{bg / 1e3:.1f} kB", "", "", None
    )
    mem = res.get("memory")
    if mem:
        small, big = mem["small"], mem["big"]
        m = mem["items"]
        frames = (mem["tokens"] + 4, mem["tokens"] * 10 + 4)
        for label, x, f in (("", small, frames[0]), (" (10x)", big, frames[1])):
            rep.add(
                f"retained per item, {f}-frame answers{label}, tracemalloc ({m:,} items)",
                f"{(x['traced_after'] - x['traced_before']) / m / 1e3:.2f} kB",
                f"{x['answer_bytes']:.0f} B answer",
                "",
                "",
                None,
            )
        per = [(x["traced_after"] - x["traced_before"]) / m for x in (small, big)]
        beyond = (per[1] - per[0]) - (big["answer_bytes"] - small["answer_bytes"])
        rep.add(
            "  10x frames: retained growth beyond the longer answer",
            f"{beyond:+.0f} B/item ({beyond / (frames[1] - frames[0]):+.2f} B/frame)",
            "",
            f"{per[1] / per[0]:.2f}x",
            "< 1 kB/item",
            beyond < 1000,
        )
        if mem.get("rss_big"):

            def growth(r: dict[str, Any]) -> float:
                return float(r["rss_after"] - r["rss_before"])

            full_small = statistics.median(growth(r) for r in res["lnb"])
            third = mem["rss_small_third"]["items"]
            slopes = [
                (full_small - growth(mem["rss_small_third"])) / (n - third),
                (growth(mem["rss_big"]) - growth(mem["rss_big_third"])) / (n - third),
            ]
            for (label, f), slope in zip(
                (("", frames[0]), (" (10x)", frames[1])), slopes, strict=True
            ):
                rep.add(
                    f"RSS per item, {f}-frame answers{label}: slope {third:,} → {n:,} items",
                    f"{slope / 1e3:.1f} kB",
                    "",
                    "",
                    "",
                    None,
                )
            # Informational: RSS also holds glibc's per-thread arenas and pymalloc's high-water
            # mark of the frames in flight (16 reader threads); the retained bytes above are
            # what the batch keeps.
            rep.add(
                "  10x frames: RSS slope ratio (allocator noise; see retained)",
                "",
                "",
                f"{slopes[1] / slopes[0]:.2f}x" if slopes[0] > 0 else "n/a",
                "",
                None,
            )
    return rep


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\nsampled stacks of the batch side: {profile['samples']:,} busy-thread samples")
    for title, key in (("self (top of stack)", "self"), ("inclusive", "inclusive")):
        print(f"  {title}:")
        for name, count in profile[key][:20]:
            print(f"    {100 * count / max(1, profile['samples']):5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="items per batch (1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="items in flight (16)")
    parser.add_argument("--tokens", type=int, default=20, help="assistant deltas per answer")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per side, interleaved")
    parser.add_argument("--memory-items", type=int, default=None, help="items of the traced runs")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--profile", action="store_true", help="sample the batch side's stacks")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    n, c, k = args.items, args.concurrency, args.tokens
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    notes = machine_notes(PACKAGES)
    for line in notes:
        say(line)
    os.environ.pop("LETTA_API_KEY", None)
    os.environ.pop("LETTA_BASE_URL", None)
    results: dict[str, Any] = {"items": n, "concurrency": c, "tokens": k, "lnb": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="lnb-batch-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["LETTA_NB_STATE_DIR"] = str(workdir / "state")
        with server_process(workdir) as (url, server_pid):
            from letta_nb.backend import Backend

            backend = Backend(url)
            agent = backend.create_agent("bench-batch")
            say(
                f"server {url} (separate process); each item in a conversation of its own "
                "on both sides"
            )
            server_cpu: dict[str, list[float]] = {"lnb": [], "bare": []}
            for rep in range(args.reps):
                for side in ("lnb", "bare") if rep % 2 == 0 else ("bare", "lnb"):
                    cpu0 = cpu_seconds(server_pid)
                    r = run_child(side, url, agent["id"], n, c, k)
                    server_cpu[side].append(cpu_seconds(server_pid) - cpu0)
                    results[side].append(r)
                    say(f"{side:4} run {rep + 1}: {r['wall']:.2f} s, {r['counts']}")
            results["server_cpu"] = server_cpu
            if args.profile:
                r = run_child("lnb", url, agent["id"], n, c, k, profile=True)
                results["profile"] = r["profile"]
                say(f"lnb  profiled run: {r['wall']:.2f} s")
            if not args.no_memory:
                m = args.memory_items or min(n, 300)
                mem: dict[str, Any] = {"items": m, "tokens": k}
                for label, tokens in (("small", k), ("big", 10 * k)):
                    mem[label] = run_child("lnb", url, agent["id"], m, c, tokens, trace=True)
                    say(f"lnb  traced run, /long {tokens}: {mem[label]['wall']:.2f} s")
                # RSS per item as a slope between two batch sizes: the allocator's high-water
                # mark of the frames in flight is paid once, not per item.
                third = max(1, n // 3)
                for label, size, tokens in (
                    ("rss_small_third", third, k),
                    ("rss_big_third", third, 10 * k),
                    ("rss_big", n, 10 * k),
                ):
                    mem[label] = run_child("lnb", url, agent["id"], size, c, tokens)
                    mem[label]["items"] = size
                    say(f"lnb  run, {size} items of /long {tokens}: {mem[label]['wall']:.2f} s")
                results["memory"] = mem
    results["notes"] = [*notes, machine_notes(PACKAGES)[0].replace("cpus", "at the end: cpus")]
    results["seconds"] = time.perf_counter() - started
    report = build_report(results)
    print()
    print(report.markdown() if args.markdown else report.text())
    if results.get("profile"):
        print_profile(results["profile"])
    print()
    for line in results["notes"]:
        print(f"- {line}")
    print(
        f"- total {results['seconds']:.0f} s; items /long {k} ({k + 4} frames each), "
        "a conversation per item"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
