"""BatchView on a batch whose items the test moves, no kernel: the wire a browser receives
(≤ 10 messages a second whatever the number of items, only the rows that changed), the
document it ends with, clicks (open an item, answer, cancel, retry), the saved copy."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from letta_nb.batch import Batch
from letta_nb.widgets import InlinePump
from letta_nb.widgets.batch_doc import apply_message
from letta_nb.widgets.batch_view import BatchView, packed_module, read_snapshot
from letta_nb.widgets.doc import decode_doc, decode_message
from letta_nb.widgets.run_view import RunView
from tests.frontend.frontend_fakes import (
    FakeChain,
    FakeClock,
    Wire,
    make_batch,
    recording_comm,
    step,
)


@pytest.fixture()
def wire() -> Iterator[Wire]:
    with recording_comm() as w:
        yield w


def make_view(tmp_path: Path, n: int = 40, **kw: Any) -> tuple[BatchView, Batch, FakeClock]:
    batch = make_batch(tmp_path / "cursors.db", n, **kw)
    clock = FakeClock()
    view = BatchView(batch, clock=clock, pump=InlinePump())
    return view, batch, clock


def initial(wire: Wire) -> dict[str, Any]:
    for msg_type, data, buffers in wire.messages:
        if msg_type == "comm_open" and data["state"].get("_esm"):
            index = (data.get("buffer_paths") or []).index(["snapshot"])
            return decode_doc(buffers[index])
    raise AssertionError("no comm_open")


def messages(wire: Wire) -> list[dict[str, Any]]:
    return [decode_message(c, b) for c, b in wire.customs() if c.get("t") in ("d", "doc")]


def browser_doc(wire: Wire) -> dict[str, Any]:
    doc = initial(wire)
    for msg in messages(wire):
        assert apply_message(doc, msg), (doc["n"], msg.get("n"))
    return doc


def click(view: BatchView, content: dict[str, Any]) -> None:
    view._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def test_many_items_changing_fast_cost_ten_messages_a_second_of_changed_rows(
    wire: Wire, tmp_path: Path
) -> None:
    view, batch, clock = make_view(tmp_path, n=500)
    start = len(messages(wire))
    for i in range(500):  # 500 items start and finish within one second
        step(batch, i, "running", runs=[f"run-{i}"])
        clock.advance(0.0005)
        step(batch, i, "completed", answer=f"answer {i}", tokens=10, duration=0.5)
        clock.advance(0.0015)
    sent = messages(wire)[start:]
    assert 5 <= len(sent) <= 11, len(sent)  # ≤ 10 a second (+ the first at once)
    rows_per_message = [sum(1 for op in m["o"] if op[0] == "i") for m in sent]
    assert sum(rows_per_message) <= 2 * 500  # each row at most twice (running, completed)
    clock.advance(1)
    view.pump_tick()
    doc = browser_doc(wire)
    assert doc["rows"] == view.document["rows"]  # the browser ends with the document
    assert doc["rows"][499][:5] == ["499", "completed", "answer 499", 10, 0.5]
    assert doc["h"]["c"] == {"completed": 500} and doc["h"]["done"] == 500


def test_the_header_counts_statuses_progress_and_controls(wire: Wire, tmp_path: Path) -> None:
    view, batch, clock = make_view(tmp_path, n=6, labels=["a", "b", "c", "d", "e", "f"])
    step(batch, 0, "completed", answer="yes", runs=["run-0"])
    step(batch, 1, "failed", error="boom " * 60, runs=["run-1"])
    step(batch, 2, "running", runs=["run-2"])
    clock.advance(1)
    view.pump_tick()
    hd = browser_doc(wire)["h"]
    assert hd["c"] == {"pending": 3, "running": 1, "completed": 1, "failed": 1}
    assert (hd["tot"], hd["done"], hd["fl"], hd["retry"]) == (6, 2, 1, 1)
    assert hd["st"] == "running" and hd["live"] and hd["ctl"] and hd["ag"] == "demo-analyst"
    row = browser_doc(wire)["rows"][1]
    assert row[0] == "b" and row[1] == "failed" and len(row[5]) <= 120 and row[5].endswith("…")


def test_a_settled_batch_refreshes_the_snapshot_and_the_saved_display_once(
    wire: Wire, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        "IPython.display.display", lambda data, **kw: shown.append(("display", dict(data)))
    )
    monkeypatch.setattr(
        "IPython.display.update_display", lambda data, **kw: shown.append(("update", dict(data)))
    )
    view, batch, clock = make_view(tmp_path, n=3, labels=["x", "<b>y</b>", "z"])
    view._ipython_display_()
    for i in range(3):
        step(batch, i, "running", runs=[f"run-{i}"])
        clock.advance(0.3)
    assert [k for k, _ in shown] == ["display"]
    for i in range(3):
        step(batch, i, "completed", answer=f"final answer {i}", tokens=5, duration=1.0)
    assert [k for k, _ in shown] == ["display", "update"], "updated once, when it is done"
    final = shown[1][1]
    assert final["text/plain"] == "batch done · 3 items · 3 completed"
    html = final["text/html"]
    assert "final answer 2" in html and "3 items · 3 completed" in html
    assert "<b>y</b>" not in html and "&lt;b&gt;y&lt;/b&gt;" in html
    assert read_snapshot(view)["h"]["st"] == "done"  # a page reload starts from the result


def test_clicks_open_an_item_answer_cancel_and_retry(wire: Wire, tmp_path: Path) -> None:
    view, batch, clock = make_view(tmp_path, n=3)
    chain = FakeChain(run_id="run-1")
    batch.runner._chains._chains[1] = chain  # type: ignore[assignment]  # item 1's live chain
    step(batch, 1, "running", runs=["run-1"])
    opened = view.open_item(1)
    assert isinstance(opened, RunView) and view.detail is opened and opened.chain is chain
    clock.advance(1)
    view.pump_tick()
    assert browser_doc(wire)["h"]["open"] == 1
    view.close_item()
    assert view.detail is None and "open" not in view.document["h"]
    click(view, {"t": "open", "i": 99})  # outside the batch: ignored
    assert view.detail is None
    step(batch, 0, "failed", error="bad", runs=["run-0"])
    batch.runner._ensure_running = lambda: None  # type: ignore[method-assign]  # no thread here
    view.retry()
    assert batch.items[0].status == "pending" and batch.items[0].attempt == 1
    view.cancel()
    assert batch.runner.sender.cancelled == [["run-1"]]  # type: ignore[attr-defined]
    counts = batch.counts
    assert counts["cancelled"] == 2 and counts["running"] == 1  # item 1: its run ends it


def test_the_module_is_small_self_contained_and_never_uses_inner_html() -> None:
    packed = packed_module()
    assert len(packed) < 12_000, len(packed)
    source = zlib.decompress(packed).decode()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert forbidden not in source
    assert "import " not in source.split("\n", 1)[1].split("export default")[0]
    assert ".lnb-batch.jupyter-widgets-disconnected::before" in source
