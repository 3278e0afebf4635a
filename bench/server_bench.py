"""Benchmark of the embedded server: live ingest, replay and resume latency, beside the targets.

Run: .venv/bin/python bench/server_bench.py [--runs 3] [--size 100000] [--only-sends]

The last rows compare sends through a conversation (``/v1/conversations/{id}/messages``: the
lock, the otid map, its own history) with sends through the agents endpoint, interleaved.

The server runs as its own process (``letta-nb server``, as the detached launcher starts it), so
the HTTP client measuring it does not share a GIL with it. The runs are the demo brain's
``/long N`` directive: N assistant deltas plus the ping, stop_reason, usage and [DONE] frames.
Every figure is the median of ``--runs`` repetitions; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from benchlib import cpu_seconds, server_process

EXTRA_FRAMES = 4  # ping, stop_reason, usage_statistics, [DONE]


def count_frames(chunks: Iterator[bytes]) -> tuple[int, float | None, bytes]:
    """(frames, seconds to the first chunk, first 4 KB) without keeping the body in memory."""
    t0 = time.perf_counter()
    first = None
    frames = 0
    prev = b""
    head = b""
    for chunk in chunks:
        if first is None:
            first = time.perf_counter() - t0
        if len(head) < 4096:
            head += chunk[: 4096 - len(head)]
        frames += chunk.count(b"\n\n") + (prev == b"\n" and chunk[:1] == b"\n")
        prev = chunk[-1:]
    return frames, first, head


def live_run(
    http: httpx.Client,
    agent_id: str,
    n: int,
    *,
    conversation: str | None = None,
    otid: str | None = None,
) -> tuple[str, int, float]:
    """Start ``/long n`` in the background and read its POST stream live to the end (through
    a conversation's endpoint when ``conversation`` is given)."""
    t0 = time.perf_counter()
    path = (
        f"/v1/conversations/{conversation}/messages"
        if conversation
        else f"/v1/agents/{agent_id}/messages"
    )
    with http.stream(
        "POST",
        path,
        json={
            "messages": [
                {"role": "user", "content": f"/long {n}", **({"otid": otid} if otid else {})}
            ],
            "streaming": True,
            "background": True,
            "stream_tokens": True,
        },
    ) as resp:
        frames, _, head = count_frames(resp.iter_raw())
    secs = time.perf_counter() - t0
    i = head.index(b'"run_id":"') + 10
    return head[i : head.index(b'"', i)].decode(), frames, secs


def replay(http: httpx.Client, run_id: str, after: int = 0) -> tuple[int, float, float]:
    """(frames, seconds to the end, seconds to the first byte) of one resume request."""
    t0 = time.perf_counter()
    with http.stream("POST", f"/v1/runs/{run_id}/stream", json={"starting_after": after}) as r:
        frames, first, _ = count_frames(r.iter_raw())
    return frames, time.perf_counter() - t0, first or 0.0


def agent_send_costs(
    http: httpx.Client, agent_id: str, runs: int, sends: int
) -> list[tuple[str, str, str]]:
    """Agents-endpoint sends only, without and with an otid: runs against any checkout
    (`cd OTHER && python THIS/bench/server_bench.py --only-sends --agent-only`)."""
    ms: dict[str, list[float]] = {"no otid": [], "with an otid": []}
    for _ in range(runs):
        per = dict.fromkeys(ms, 0.0)
        for _ in range(sends):
            per["no otid"] += live_run(http, agent_id, 16)[2]
            per["with an otid"] += live_run(http, agent_id, 16, otid=str(uuid.uuid4()))[2]
        for key, total in per.items():
            ms[key].append(total / sends * 1000)
    return [
        (
            f"short agent send ({sends} x /long 16), {key}",
            f"{statistics.median(v):.2f} ms/send",
            "(compare checkouts)",
        )
        for key, v in ms.items()
    ]


def send_costs(
    http: httpx.Client, agent_id: str, runs: int, sends: int, frames: int
) -> list[tuple[str, str, str]]:
    """Agent sends against conversation sends, interleaved so load drift hits both alike:
    ms per short send (POST to [DONE], a fresh conversation per send as a batch makes them,
    and one long-lived conversation), and the live ingest of a ``frames``-frame run."""
    conv = http.post("/v1/conversations/", params={"agent_id": agent_id}, json={}).json()["id"]
    short: dict[str, list[float]] = {"agent": [], "conversation": [], "new conversation": []}
    for _ in range(runs):
        per: dict[str, float] = dict.fromkeys(short, 0.0)
        for _ in range(sends):
            per["agent"] += live_run(http, agent_id, 16)[2]
            per["conversation"] += live_run(http, agent_id, 16, conversation=conv)[2]
            t0 = time.perf_counter()
            fresh = http.post("/v1/conversations/", params={"agent_id": agent_id}, json={})
            live_run(http, agent_id, 16, conversation=fresh.json()["id"])
            per["new conversation"] += time.perf_counter() - t0
        for key, total in per.items():
            short[key].append(total / sends * 1000)
    big: dict[str, list[float]] = {"agent": [], "conversation": []}
    for _ in range(runs):
        big["agent"].append(frames / live_run(http, agent_id, frames - EXTRA_FRAMES)[2])
        big["conversation"].append(
            frames / live_run(http, agent_id, frames - EXTRA_FRAMES, conversation=conv)[2]
        )
    base = statistics.median(short["agent"])
    rows = [
        (
            f"short send ({sends} x /long 16, POST to [DONE]), {key}",
            f"{statistics.median(ms):.2f} ms/send ({statistics.median(ms) / base:.2f}x agent)",
            "<= 1.10x agent" if key != "agent" else "(baseline)",
        )
        for key, ms in short.items()
    ]
    rows[-1] = (rows[-1][0] + " (create + send)", rows[-1][1], "(informative)")
    base = statistics.median(big["agent"])
    for key, rates in big.items():
        rate = statistics.median(rates)
        rows.append(
            (
                f"live ingest ({frames:,}-frame run), {key}",
                f"{rate:,.0f} frames/s ({rate / base:.2f}x)",
                ">= 0.90x agent" if key != "agent" else "(baseline)",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per measure (median)")
    parser.add_argument("--size", type=int, default=100_000, help="frames of the big run")
    parser.add_argument(
        "--only-sends",
        action="store_true",
        help="only the agent vs conversation send costs (issue 14)",
    )
    parser.add_argument("--sends", type=int, default=40, help="short sends per path and run")
    parser.add_argument(
        "--agent-only",
        action="store_true",
        help="with --only-sends: agents-endpoint sends only (any checkout's server)",
    )
    args = parser.parse_args()
    size, small = args.size, 2_000
    rows: list[tuple[str, str, str]] = []
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="letta-nb-bench-") as tmp,
        server_process(Path(tmp)) as (url, pid),
        httpx.Client(base_url=url, timeout=300) as http,
    ):
        agent_id = http.post("/v1/agents/", json={"model": "letta_nb/demo"}).json()["id"]
        live_run(http, agent_id, 1000)  # warm-up
        if args.only_sends:
            measured = (
                agent_send_costs(http, agent_id, args.runs, args.sends)
                if args.agent_only
                else send_costs(http, agent_id, args.runs, args.sends, 20_000)
            )
            _print(measured, load, args.runs)
            return
        rates, per_cpu, big = [], [], ""
        for _ in range(args.runs):
            cpu0 = cpu_seconds(pid)
            big, frames, secs = live_run(http, agent_id, size - EXTRA_FRAMES)
            assert frames == size, (frames, size)
            rates.append(frames / secs)
            per_cpu.append(frames / max(cpu_seconds(pid) - cpu0, 1e-9))
        rows.append(
            (
                f"live ingest ({size:,}-frame run, read live over HTTP)",
                f"{statistics.median(rates):,.0f} frames/s ({min(rates):,.0f}-{max(rates):,.0f})",
                ">= 20,000 frames/s",
            )
        )
        rows.append(
            (
                "  server CPU cost of that (both threads, less noisy)",
                f"{statistics.median(per_cpu):,.0f} frames/CPU-s",
                "(informative)",
            )
        )
        run_small, _, _ = live_run(http, agent_id, small - EXTRA_FRAMES)
        for label, run_id in ((f"{small:,}", run_small), (f"{size:,}", big)):
            speeds = [n / t for n, t, _ in (replay(http, run_id) for _ in range(args.runs))]
            rows.append(
                (
                    f"replay of a finished {label}-frame run",
                    f"{statistics.median(speeds):,.0f} frames/s (best {max(speeds):,.0f})",
                    ">= 35,000 frames/s",
                )
            )
        for label, after in (("start", 0), ("middle", size // 2), ("end", size - 1)):
            firsts = []
            for _ in range(5):
                with http.stream(
                    "POST", f"/v1/runs/{big}/stream", json={"starting_after": after}
                ) as r:
                    t0 = time.perf_counter()
                    next(r.iter_raw())
                    firsts.append((time.perf_counter() - t0) * 1000)
            rows.append(
                (
                    f"resume first frame, {label} of {size:,}-frame run",
                    f"{statistics.median(firsts):.2f} ms (median of 5)",
                    "<= 10 ms",
                )
            )
        # last, so the rows above are measured as by earlier versions of this script
        rows.extend(send_costs(http, agent_id, args.runs, args.sends, 20_000))
    _print(rows, load, args.runs)


def _print(rows: list[tuple[str, str, str]], load: float, runs: int) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs; median of {runs}")
    print(f"{'measure':<{width}}  {'result':<36}  target")
    print(f"{'-' * width}  {'-' * 36}  {'-' * 18}")
    for name, result, target in rows:
        print(f"{name:<{width}}  {result:<36}  {target}")


if __name__ == "__main__":
    main()
