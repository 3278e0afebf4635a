"""Benchmark of the embedded server: live ingest, replay and resume latency, beside the targets.

Run: .venv/bin/python bench/server_bench.py
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from letta_nb.server import start_in_process
from letta_nb.server.brains.base import Assistant, ToolResult, Turn, TurnContext


class FloodBrain:
    """Streams ``N`` one-word deltas as fast as the runner takes them."""

    handle = "bench/flood"
    tools: Mapping[str, Any] = {}
    approval_required = frozenset()

    def respond(self, ctx: TurnContext, user_text: str) -> Turn:
        for i in range(int(user_text)):
            yield Assistant(f" w{i}")

    def resume_after_approval(self, ctx: TurnContext, result: ToolResult) -> Turn:
        yield Assistant("unused")


def run_to_end(http: httpx.Client, agent_id: str, n: int) -> tuple[str, int, float]:
    """Start a background run of n deltas, read its POST stream to the end."""
    t0 = time.perf_counter()
    run_id = ""
    count = 0
    with http.stream("POST", f"/v1/agents/{agent_id}/messages", json={
        "messages": [{"role": "user", "content": str(n)}], "streaming": True,
        "background": True, "stream_tokens": True}) as resp:
        buf = b""
        for chunk in resp.iter_raw():
            buf += chunk
            if not run_id and b'"run_id":"' in buf:
                i = buf.index(b'"run_id":"') + 10
                run_id = buf[i : buf.index(b'"', i)].decode()
        count = buf.count(b"\n\n")
    return run_id, count, time.perf_counter() - t0


def replay(http: httpx.Client, run_id: str, after: int = 0) -> tuple[int, float, float]:
    """(frames, seconds to the end, seconds to the first byte) of one resume request."""
    t0 = time.perf_counter()
    first = None
    frames = 0
    with http.stream("POST", f"/v1/runs/{run_id}/stream", json={"starting_after": after}) as r:
        for chunk in r.iter_raw():
            if first is None:
                first = time.perf_counter() - t0
            frames += chunk.count(b"\n\n")
    return frames, time.perf_counter() - t0, first or 0.0


def main() -> None:
    brain = FloodBrain()
    rows: list[tuple[str, str, str]] = []
    with start_in_process(brains={brain.handle: brain}) as srv, httpx.Client(
            base_url=srv.base_url, timeout=120) as http:
        agent_id = http.post("/v1/agents/", json={"model": brain.handle}).json()["id"]
        run_to_end(http, agent_id, 1000)  # warm-up
        run_big, frames_big, secs = run_to_end(http, agent_id, 100_000 - 4)
        rows.append(("live ingest (100,000-frame run, read live)",
                     f"{frames_big / secs:,.0f} frames/s", ">= 20,000 frames/s"))
        run_small, _, _ = run_to_end(http, agent_id, 2000 - 4)
        for label, run_id in (("2,000", run_small), ("100,000", run_big)):
            best = max(n / t for n, t, _ in (replay(http, run_id) for _ in range(3)))
            rows.append((f"replay of a finished {label}-frame run", f"{best:,.0f} frames/s",
                         ">= 35,000 frames/s"))
        for label, after in (("start", 0), ("middle", 50_000), ("end", 99_999)):
            firsts = []
            for _ in range(5):
                with http.stream("POST", f"/v1/runs/{run_big}/stream",
                                 json={"starting_after": after}) as r:
                    t0 = time.perf_counter()
                    next(r.iter_raw())
                    firsts.append((time.perf_counter() - t0) * 1000)
            rows.append((f"resume first frame, {label} of 100,000-frame run",
                         f"{sorted(firsts)[len(firsts) // 2]:.2f} ms (median of 5)", "<= 10 ms"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<28}  target")
    print(f"{'-' * width}  {'-' * 28}  {'-' * 18}")
    for name, result, target in rows:
        print(f"{name:<{width}}  {result:<28}  {target}")


if __name__ == "__main__":
    main()
