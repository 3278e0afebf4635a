"""A real kernel: a run's widget updates stay in its cell while other cells run; restarts resume.

Cells execute through jupyter_client like nbclient does (no cellId), so the cursor key is the
hash of agent + cell source: re-running the same cell text finds the same cursor.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kernel_harness import Kernel

pytestmark = pytest.mark.kernel

RUN_CELL = "%%letta --out h\n/long {n} 20"
OTHER_CELL = "import time\nfor i in range(4):\n    print('other', i, flush=True)\n" \
             "    time.sleep(0.15)"
CHECK_CELL = ("import re\nst = h.wait(60)\ntoks = re.findall(r'token\\d+', h.transcript)\n"
              "print(st, h.run_id, len(toks), toks == [f'token{{i}}' for i in range(1, {n} + 1)])")


def parent(msg: dict[str, Any]) -> str | None:
    return msg["parent_header"].get("msg_id")


def comm_msgs(kernel: Kernel) -> list[dict[str, Any]]:
    return [m for m in kernel.log if m["msg_type"] in ("comm_open", "comm_msg", "comm_close")]


def test_run_output_stays_in_its_cell_while_other_cells_execute(kernel: Kernel) -> None:
    kernel.run("%load_ext letta_nb")
    start = kernel.run(RUN_CELL.format(n=200))
    t0 = time.monotonic()
    others = [kernel.run(OTHER_CELL) for _ in range(3)]  # ~1.8 s while the run streams
    check = kernel.run(CHECK_CELL.format(n=200), timeout=60)
    kernel.pump(0.5)  # the terminal flush
    elapsed = time.monotonic() - t0
    assert kernel.stdout(check).split()[0] == "completed"
    assert kernel.stdout(check).split()[2:] == ["200", "True"]
    assert not kernel.errors(), kernel.errors()

    # the widget was displayed by the starting cell ...
    shown = [m for m in kernel.log if m["msg_type"] == "display_data" and parent(m) == start]
    assert shown and "application/vnd.jupyter.widget-view+json" in shown[0]["content"]["data"]
    assert shown[0]["content"]["data"]["text/plain"] == "<letta_nb run view: agent demo-analyst>"
    # ... every widget message of the run carries that cell as parent, none another cell's
    comms = comm_msgs(kernel)
    updates = [m for m in comms if m["msg_type"] == "comm_msg"]
    assert len(updates) > 10
    assert {parent(m) for m in comms} == {start}
    # the other cells' prints went to those cells only
    for cell in others:
        assert kernel.stdout(cell) == "".join(f"other {i}\n" for i in range(4))
    assert kernel.stdout(start) == ""
    # throttled: at most ~10 flushes a second, each touching a few widgets
    values = [m for m in updates if "value" in m["content"]["data"].get("state", {})]
    assert len(values) <= 4 * 11 * (elapsed + 1), (len(values), elapsed)


def _server_runs(server: Any) -> list[dict[str, Any]]:
    from letta_nb.backend import Backend

    backend = Backend(server.base_url)
    try:
        return backend.list_runs(limit=100)
    finally:
        backend.close()


def test_kernel_restart_resumes_from_the_disk_cursor(kernel: Kernel, kernel_server: Any) -> None:
    n = 750  # 15 s: still streaming when the restarted kernel re-runs the cell
    cell = RUN_CELL.format(n=n)
    kernel.run("%load_ext letta_nb")
    kernel.run(cell)
    kernel.pump(2.6)  # the session persists the cursor at least every ~2 s
    first = kernel.run("print(h.run_id, h.status, h.follower.last_seq)")
    run_id, status, seq = kernel.stdout(first).split()
    assert status == "running" and int(seq) > 1
    before = {r["id"] for r in _server_runs(kernel_server)}
    assert run_id in before

    kernel.restart()
    kernel.run("%load_ext letta_nb")
    again = kernel.run(cell)
    resumed = kernel.run("print(h.run_id, h.status, h.follower.transcript.runs)")
    rid2, status2, _ = kernel.stdout(resumed).split(maxsplit=2)
    assert rid2 == run_id and status2 in ("starting", "running")
    server_status = {r["id"]: r["status"] for r in _server_runs(kernel_server)}[run_id]
    assert server_status == "running"  # resumed mid-run, not replayed after the end
    check = kernel.run(CHECK_CELL.format(n=n), timeout=60)
    out = kernel.stdout(check).split()
    assert out == ["completed", run_id, str(n), "True"], out
    assert {r["id"] for r in _server_runs(kernel_server)} == before  # no new run
    assert not kernel.errors(), kernel.errors()
    shown = [m for m in kernel.log if m["msg_type"] == "display_data" and parent(m) == again]
    assert shown, "the re-run cell shows the resumed run"
