"""The dashboard against the embedded server (its refresh thread off: the test refreshes): this
kernel's cell runs and batches, the server's runs nobody here follows, the stall flag, attach
and cancel per row, one live dashboard per kernel, the wire a browser receives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from letta_nb.batch import Batch
from letta_nb.core.chunks import new_otid
from letta_nb.core.clock import epoch
from letta_nb.widgets.batch_view import BatchView
from letta_nb.widgets.dash_doc import apply_message
from letta_nb.widgets.dashboard import DashboardView
from letta_nb.widgets.doc import decode_doc, decode_message
from letta_nb.widgets.run_view import RunView
from tests.frontend.frontend_fakes import Wire, recording_comm

BOUND = 60.0


@pytest.fixture()
def wire() -> Iterator[Wire]:
    with recording_comm() as w:
        yield w


def until(pred: Callable[[], Any], timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return got


def background_run(session: Any, message: str) -> str:
    """A run started by someone else (not followed here): its id, the stream left."""
    stream = session.backend.start(
        session.agent["id"], [{"role": "user", "content": message}], otid=new_otid()
    )
    try:
        for chunk in stream:
            if chunk.run_id:
                return str(chunk.run_id)
    finally:
        stream.close()
    raise AssertionError("no run id")


def rows(dash: DashboardView) -> dict[str, dict[str, Any]]:
    dash.refresh(server=True, send=True)
    return dash.document["rows"]


def test_the_rows_are_this_kernels_runs_batches_and_the_servers_other_runs(
    session: Any, wire: Wire
) -> None:
    cell = session.send("/long 3", key="dash-cell", wait=True, timeout=BOUND)
    batch = session.map(["/long 2", "/long 3"], key="dash-batch")
    batch.wait(BOUND)
    other = background_run(session, "/long 400 20")
    dash = DashboardView(session, start=False)
    got = rows(dash)
    run_row = got[f"run:{cell.run_id}"]
    assert (run_row["k"], run_row["st"], run_row["ag"]) == ("run", "completed", "demo-analyst")
    assert run_row["tok"] > 0 and run_row["w"] == "/long 3" and run_row["a"] == ["attach"]
    batch_row = got[f"batch:{batch.key}"]
    assert batch_row["k"] == "batch" and batch_row["st"] == "done"
    assert batch_row["w"] == "batch of 2: 2 done" and batch_row["a"] == ["attach"]
    server = got[f"server:{other}"]
    assert server["k"] == "server" and server["st"] in ("created", "running")
    assert server["w"] == "not followed here" and "idle" not in server
    assert server["a"] == ["attach", "cancel"] and server["el"] >= 0
    assert all(not r.get("stall") for r in got.values())
    handle = session.attach(other)  # now followed here: a run row, no second line for it
    again = rows(dash)
    assert f"server:{other}" not in again and again[f"run:{other}"]["k"] == "run"
    assert again[f"run:{other}"]["a"] == ["attach", "cancel"]
    handle.cancel()
    handle.wait(BOUND)
    doc = decode_doc(_initial(wire, dash))
    for content, buffers in wire.customs():
        msg = decode_message(content, buffers)
        if msg.get("t") == "d" and msg["n"] > doc["n"]:
            assert apply_message(doc, msg)
    assert doc["rows"] == dash.document["rows"] and doc["order"] == dash.document["order"]


def _initial(wire: Wire, dash: DashboardView) -> bytes:
    for msg_type, data, buffers in wire.messages:
        if msg_type == "comm_open" and data.get("state", {}).get("_esm"):
            if data["state"].get("_model_name") != "AnyModel":
                continue
            paths = data.get("buffer_paths") or []
            if ["_module"] in paths:
                return buffers[paths.index(["snapshot"])]
    raise AssertionError("no comm_open")


def test_a_running_row_without_frames_is_flagged_as_stalled(session: Any, wire: Wire) -> None:
    quiet = session.send("/silent 30", key="dash-stall")
    until(lambda: quiet.status == "running")
    dash = DashboardView(session, start=False, stall_after=0.3)
    row = until(lambda: (r := rows(dash).get(f"run:{quiet.run_id}")) and r.get("stall") and r)
    assert row["idle"] >= 0.3 and dash.document["h"]["stalled"] >= 1
    assert dash.document["h"]["stall"] == 0.3
    quiet.cancel()
    quiet.wait(BOUND)


def test_attach_and_cancel_per_row(session: Any, wire: Wire) -> None:
    other = background_run(session, "/long 600 20")
    created = epoch(session.backend.get_run(other)["created_at"])
    until(lambda: time.time() - created >= 0.5)  # it has been running a while before the attach
    dash = DashboardView(session, start=False)
    rows(dash)
    view = dash.attach(f"server:{other}")
    assert isinstance(view, RunView) and dash.detail is view
    head, shown_rows = dash.document["h"], dash.document["rows"]
    assert head["open"] == f"run:{other}"  # attached: it is this kernel's run now
    assert f"server:{other}" not in shown_rows and shown_rows[f"run:{other}"]["w"] == (
        f"attached {other[:12]}"
    )
    assert rows(dash)[f"run:{other}"]["el"] >= 0.5  # the run's time, not the time since attach
    dash.cancel(f"run:{other}")
    assert until(lambda: session.backend.get_run(other)["status"] == "cancelled")
    batch = session.map(["/long 300 20", "/long 300 21"], key="dash-cancel")
    rows(dash)
    shown = dash.attach(f"batch:{batch.key}")
    assert isinstance(shown, BatchView) and shown.batch is batch
    dash.cancel(f"batch:{batch.key}")
    assert batch.wait(BOUND) == "done" and set(batch.counts) == {"cancelled"}
    dash.attach("run:gone")
    assert dash.document["h"]["note"] == "that row is gone"
    dash.close_detail()
    assert dash.detail is None and "open" not in dash.document["h"]


def test_one_live_dashboard_per_kernel_and_a_safe_static_copy(session: Any, wire: Wire) -> None:
    first = DashboardView(session, start=False)
    second = DashboardView(session, start=False)
    assert first._stop.is_set() and not second._stop.is_set()
    session.send("<script>x</script>", key="dash-html", wait=True, timeout=BOUND)
    second.refresh()
    html = second.static_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert session.backend.base_url in html
    second.close()


def test_batches_show_their_items_in_flight(session: Any, wire: Wire) -> None:
    batch: Batch = session.map([f"/long 200 {20 + i}" for i in range(4)], key="dash-items")
    until(lambda: batch.counts.get("running") == 4)
    dash = DashboardView(session, start=False)
    got = until(
        lambda: (r := rows(dash)) and sum(1 for v in r.values() if v["k"] == "item") == 4 and r
    )
    items = [v for v in got.values() if v["k"] == "item"]
    assert {v["w"] for v in items} == {"row 0", "row 1", "row 2", "row 3"}
    assert all(v["st"] == "running" for v in items) and got[f"batch:{batch.key}"]["live"]
    order = dash.document["order"]
    assert order.index(f"batch:{batch.key}") < order.index(f"item:{batch.key}:0")
    batch.cancel()
    batch.wait(BOUND)
