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

from tests.kernel.kernel_harness import (
    WIDGET_VIEW,
    Kernel,
    KernelVariant,
    check_kernel_versions,
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


def view_state(kernel: Kernel, model_id: str) -> tuple[dict[str, Any], str, bool]:
    """(header, transcript text, controls shown) as the browser module would show them: the
    document from the view's `snapshot` trait, then its numbered messages applied in order."""
    from letta_nb.widgets.doc import apply_message, decode_doc, decode_message, empty_doc

    doc = empty_doc()
    for msg in kernel.log:
        content = msg["content"]
        if msg["msg_type"] not in ("comm_open", "comm_msg") or content["comm_id"] != model_id:
            continue
        data = content["data"]
        paths = data.get("buffer_paths") or []
        if ["snapshot"] in paths:
            snap = decode_doc(msg["buffers"][paths.index(["snapshot"])])
            if snap["n"] >= doc["n"]:
                doc = snap
        elif data.get("method") == "custom":
            apply_message(doc, decode_message(data["content"], msg.get("buffers")))
    body = "\n".join(str(item.get("x", "")) for item in doc["e"])
    return doc["h"], body, bool(doc["h"].get("ctl"))


def is_snapshot_update(msg: dict[str, Any]) -> bool:
    data = msg["content"]["data"]
    return data.get("method") == "update" and data.get("buffer_paths") == [["snapshot"]]


def shows_final(kernel: Kernel, model_id: str, last_token: str) -> bool:
    header, body, controls = view_state(kernel, model_id)
    return (
        header.get("st") == "completed"
        and re.search(rf"\b{last_token}\b", body) is not None
        and not controls
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

    # every comm / display message of the run carries the starting cell as parent, except the
    # final state, which is also published on the cell executing when the run settled (here
    # the check cell): nbclient records only that cell's messages, so saved notebooks need it
    comms = comm_msgs(kernel)
    updates = [m for m in comms if m["msg_type"] == "comm_msg"]
    assert len(updates) >= 3  # batched: about one view message a second for this run
    final = [m for m in updates if parent(m) != start]
    assert {parent(m) for m in final} <= {check}
    assert all(is_snapshot_update(m) for m in final), final
    assert {parent(m) for m in comms if m not in final} == {start}
    shown = [m for m in kernel.log if m["msg_type"] in OUTPUT_TYPES[1:4]]
    assert [(m["msg_type"], parent(m)) for m in shown] == [
        ("display_data", start),
        ("update_display_data", check),  # the final transcript replaces the saved text/html
    ]
    assert shown[1]["content"]["transient"] == shown[0]["content"]["transient"]
    assert "token200" in shown[1]["content"]["data"]["text/html"]
    # the other cells show their own prints and nothing of the run
    for cell in others:
        outputs = [m for m in kernel.log if parent(m) == cell and m["msg_type"] in OUTPUT_TYPES]
        assert {m["msg_type"] for m in outputs} == {"stream"}, outputs
        assert kernel.stdout(cell) == "".join(f"other {i}\n" for i in range(4))
    check_out = [
        m
        for m in kernel.log
        if parent(m) == check and m["msg_type"] in OUTPUT_TYPES and m not in final + shown
    ]
    assert {m["msg_type"] for m in check_out} == {"stream"}, check_out
    assert kernel.stdout(start) == ""
    # throttled: at most ~10 view messages a second
    customs = [m for m in updates if m["content"]["data"].get("method") == "custom"]
    assert len(customs) <= 11 * (elapsed + 1), (len(customs), elapsed)


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
    # ... and every widget message after the restart belongs to it (the final state is also
    # published on the cell executing when the run settled, for nbclient)
    final = [m for m in comm_msgs(kernel) if parent(m) != again]
    assert all(is_snapshot_update(m) and parent(m) == check for m in final), final
    assert not kernel.errors(), kernel.errors()
