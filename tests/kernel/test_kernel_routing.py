"""A real kernel: a run's widget updates stay in its cell while other cells run; restarts resume.

Each test runs on ipykernel 7.4 and 6.31 (the `kernel_variant` fixture in conftest.py): thread
output routing differs between them (ipykernel 7.1 routes thread output to the latest cell),
the behaviour must not.

Cells execute through jupyter_client like nbclient does (no cellId), so the cursor key is the
hash of agent + cell source: re-running the same cell text finds the same cursor.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from kernel_harness import (
    WIDGET_VIEW,
    Kernel,
    KernelVariant,
    check_kernel_versions,
    widget_states,
    widget_tree,
)

pytestmark = pytest.mark.kernel

RUN_CELL = "%%letta --out h\n/long {n} 20"
OTHER_CELL = (
    "import time\nfor i in range(4):\n    print('other', i, flush=True)\n    time.sleep(0.15)"
)
CHECK_CELL = (
    "import re\nst = h.wait(60)\ntoks = re.findall(r'token\\d+', h.transcript)\n"
    "print(st, h.run_id, len(toks), toks == [f'token{{i}}' for i in range(1, {n} + 1)])"
)


def parent(msg: dict[str, Any]) -> str | None:
    return msg["parent_header"].get("msg_id")


def comm_msgs(kernel: Kernel) -> list[dict[str, Any]]:
    return [m for m in kernel.log if m["msg_type"] in ("comm_open", "comm_msg", "comm_close")]


#: Output-bearing iopub messages (everything a front end would attach to some cell).
OUTPUT_TYPES = (
    "stream",
    "display_data",
    "update_display_data",
    "clear_output",
    "execute_result",
    "error",
    "comm_open",
    "comm_msg",
    "comm_close",
)


def view_model_id(kernel: Kernel, cell: str) -> str:
    """The model id of the run view the cell `cell` displayed."""
    shown = [
        m
        for m in kernel.log
        if m["msg_type"] == "display_data"
        and parent(m) == cell
        and WIDGET_VIEW in m["content"]["data"]
    ]
    assert len(shown) == 1, shown
    assert shown[0]["content"]["data"]["text/plain"] == "<letta_nb run view: agent demo-analyst>"
    return str(shown[0]["content"]["data"][WIDGET_VIEW]["model_id"])


def view_state(kernel: Kernel, model_id: str) -> tuple[str, str, list[bool]]:
    """(header HTML, transcript text, Cancel/Detach disabled) as a front end would show them."""
    tree = widget_tree(widget_states(kernel.log), model_id)
    htmls = [str(s.get("value", "")) for s in tree if s.get("_model_name") == "HTMLModel"]
    header = next((h for h in htmls if "lnb-header" in h), "")
    body = "\n".join(h for h in htmls if "lnb-header" not in h)
    buttons = [bool(s.get("disabled")) for s in tree if s.get("_model_name") == "ButtonModel"]
    return header, body, buttons


def shows_final(kernel: Kernel, model_id: str, last_token: str) -> bool:
    header, body, buttons = view_state(kernel, model_id)
    return (
        ">completed</span>" in header
        and re.search(rf"\b{last_token}\b", body) is not None
        and buttons == [True, True]
    )


def test_run_output_stays_in_its_cell_while_other_cells_execute(kernel: Kernel) -> None:
    kernel.run("%load_ext letta_nb")
    start = kernel.run(RUN_CELL.format(n=200))
    t0 = time.monotonic()
    others = [kernel.run(OTHER_CELL) for _ in range(3)]  # ~1.8 s while the run streams
    check = kernel.run(CHECK_CELL.format(n=200), timeout=60)
    elapsed = time.monotonic() - t0
    assert kernel.stdout(check).split()[0] == "completed"
    assert kernel.stdout(check).split()[2:] == ["200", "True"]
    # the widget was displayed by the starting cell and ends up showing the final state
    model = view_model_id(kernel, start)
    assert kernel.pump_until(lambda: shows_final(kernel, model, "token200"), timeout=30), (
        view_state(kernel, model)
    )
    kernel.pump(0.5)  # anything still in flight must be routed right too
    assert not kernel.errors(), kernel.errors()
    _, body, _ = view_state(kernel, model)
    assert re.findall(r"token\d+", body) == [f"token{i}" for i in range(1, 201)]

    # every comm / display message of the run carries the starting cell as parent
    comms = comm_msgs(kernel)
    updates = [m for m in comms if m["msg_type"] == "comm_msg"]
    assert len(updates) > 10
    assert {parent(m) for m in comms} == {start}
    displays = [m for m in kernel.log if m["msg_type"] in OUTPUT_TYPES[1:4]]
    assert {parent(m) for m in displays} == {start}
    # the other cells show their own prints and nothing of the run
    for cell in others:
        outputs = [m for m in kernel.log if parent(m) == cell and m["msg_type"] in OUTPUT_TYPES]
        assert {m["msg_type"] for m in outputs} == {"stream"}, outputs
        assert kernel.stdout(cell) == "".join(f"other {i}\n" for i in range(4))
    check_out = [m for m in kernel.log if parent(m) == check and m["msg_type"] in OUTPUT_TYPES]
    assert {m["msg_type"] for m in check_out} == {"stream"}, check_out
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


def test_kernel_restart_resumes_from_the_disk_cursor(
    kernel: Kernel, kernel_server: Any, kernel_variant: KernelVariant
) -> None:
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
    check_kernel_versions(kernel, kernel_variant)  # the same ipykernel after the restart
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
    model = view_model_id(kernel, again)  # the re-run cell shows the resumed run ...
    assert kernel.pump_until(lambda: shows_final(kernel, model, f"token{n}"), timeout=30), (
        view_state(kernel, model)
    )
    # ... and every widget message after the restart belongs to it
    assert {parent(m) for m in comm_msgs(kernel)} == {again}
    assert not kernel.errors(), kernel.errors()
