"""RunView on a fake chain, no kernel: the wire a browser receives, clicks, display updates."""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from letta_nb.widgets import InlinePump, RunView
from letta_nb.widgets.doc import apply_message, decode_doc, decode_message
from letta_nb.widgets.run_view import esm, module_source, packed_module, read_snapshot
from tests.frontend.frontend_fakes import FakeChain, FakeClock, Wire, recording_comm


@pytest.fixture()
def wire() -> Iterator[Wire]:
    with recording_comm() as w:
        yield w


def make_view(chain: FakeChain | None = None, **kw: Any) -> tuple[RunView, FakeChain, FakeClock]:
    chain = chain or FakeChain()
    clock = FakeClock()
    view = RunView(chain, agent="demo-analyst", clock=clock, pump=InlinePump(), **kw)
    return view, chain, clock


def browser_doc(view: RunView, wire: Wire) -> dict[str, Any]:
    """What a browser view that saw the widget open and every message shows."""
    doc = read_initial(wire)
    for content, buffers in wire.customs():
        msg = decode_message(content, buffers)
        if msg["t"] == "d":
            assert apply_message(doc, msg), (doc["n"], msg["n"])
    return doc


def read_initial(wire: Wire) -> dict[str, Any]:
    for msg_type, data, buffers in wire.messages:
        if msg_type == "comm_open" and data["state"].get("_esm"):
            paths = data.get("buffer_paths") or []
            index = paths.index(["snapshot"])
            return decode_doc(buffers[index])
    raise AssertionError("no comm_open")


def later(view: RunView, clock: FakeClock, seconds: float = 1.0) -> None:
    """Time passes; the pump looks at the view again (the thread pump does this by itself)."""
    clock.advance(seconds)
    view.pump_tick()


def click(view: RunView, content: dict[str, Any]) -> None:
    """A message from the browser module, as the kernel hands it to the widget."""
    view._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def snapshot_updates(wire: Wire) -> int:
    return sum(
        1
        for t, d, _ in wire.messages
        if t == "comm_msg"
        and d.get("method") == "update"
        and ["snapshot"] in (d.get("buffer_paths") or [])
    )


def test_the_browser_ends_with_the_document(wire: Wire) -> None:
    view, chain, clock = make_view()
    chain.think("Let me look at the data.")
    for i in range(40):
        chain.say(f" word{i}")
        clock.advance(0.05)
    chain.feed(
        "tool_call_message",
        id="t1",
        tool_call={"name": "group_stats", "arguments": '{"by": "region"}', "tool_call_id": "c1"},
    )
    chain.feed(
        "tool_return_message",
        id="t2",
        name="group_stats",
        status="success",
        tool_return='{"groups": [1, 2]}',
        tool_call_id="c1",
    )
    clock.advance(1.5)
    chain.say("**East** leads.", msg_id="m2")
    clock.advance(1.5)
    chain.stop()
    doc = browser_doc(view, wire)
    assert doc == view.document == read_snapshot(view)
    kinds = [item["k"] for item in doc["e"]]
    assert kinds == ["re", "as", "tc", "tr", "as", "", ""]
    assert doc["e"][1]["x"] == "".join(f" word{i}" for i in range(40))
    assert doc["e"][2]["f"] == [["by", "text", "region"]]
    assert doc["e"][3]["x"] == '{\n  "groups": [\n    1,\n    2\n  ]\n}'
    assert doc["h"]["st"] == "completed" and doc["h"]["tok"] == 42 and not doc["h"]["ctl"]
    # the trait is re-sent only when the chain settles, never per frame
    assert snapshot_updates(wire) == 1


def test_one_model_per_run_and_no_per_frame_traffic(wire: Wire) -> None:
    _view, chain, clock = make_view()
    opens = [d for t, d, _ in wire.messages if t == "comm_open"]
    models = [d["state"]["_model_name"] for d in opens]
    assert models.count("AnyModel") == 1 and len(models) <= 2  # the view (+ a shared Layout)
    before = len(wire.messages)
    for i in range(500):  # 500 frames within 0.5 s
        chain.say(f" t{i}")
        clock.advance(0.001)
    sent = len(wire.messages) - before
    assert sent <= 2, f"{sent} messages for 500 frames in half a second"
    _second, _, _ = make_view(chain)
    opens_after = [d for t, d, _ in wire.messages if t == "comm_open"]
    assert [d["state"]["_model_name"] for d in opens_after].count("LayoutModel") <= 1


def test_the_module_is_small_self_contained_and_never_uses_inner_html() -> None:
    loader = esm()
    assert len(loader) < 600 and "http" not in loader and "import(u)" in loader
    assert not re.search(r"\bimport\s+[\w{*]|from\s+['\"]", loader), "no static imports"
    packed = packed_module()
    assert len(packed) < 9_000, len(packed)
    source = zlib.decompress(packed).decode()
    assert source == module_source()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert forbidden not in source  # comments are stripped from the shipped module
    assert not re.search(r"^\s*import\s", module_source(readable=True), re.M), "no imports"
    assert ".lnb-run.jupyter-widgets-disconnected::before{display:none;}" in source


def test_approve_from_the_browser_answers_once(wire: Wire) -> None:
    view, chain, clock = make_view()
    chain.request_approval('{"title": "Q3", "body": "# Report\\n\\n| a |\\n|---|\\n| 1 |"}')
    doc = browser_doc(view, wire)
    assert doc["h"]["st"] == "requires_approval" and doc["h"]["ap"]["ids"] == ["call-1"]
    assert snapshot_updates(wire) == 1  # requires_approval is a settle point
    click(view, {"t": "answer", "approve": True, "reason": None})
    click(view, {"t": "answer", "approve": True, "reason": None})  # a second view's click
    assert chain.calls == [("answer", True, None), ("answer", True, None)]
    assert chain.approval is not None and chain.approval.state == "approved"
    later(view, clock)
    doc = browser_doc(view, wire)
    assert "already answered" in doc["h"].get("note", "")
    assert doc["e"][0]["o"] == {"ok": True, "why": None}


def test_deny_failure_is_shown_and_the_card_stays_open(wire: Wire) -> None:
    view, chain, clock = make_view()
    chain.request_approval()
    chain.fail_answer = "cannot reach the Letta server at http://127.0.0.1:1"
    click(view, {"t": "answer", "approve": False, "reason": "later"})
    later(view, clock)
    doc = browser_doc(view, wire)
    assert doc["h"]["note"].startswith("could not send the answer: cannot reach")
    assert doc["h"]["ap"]["ids"] == ["call-1"] and "o" not in doc["e"][0]


def test_cancel_and_detach_from_the_browser(wire: Wire) -> None:
    view, chain, clock = make_view()
    chain.say("x")
    done = threading.Event()
    original = chain.cancel

    def cancel() -> str:
        result = original()
        done.set()
        return result

    chain.cancel = cancel  # type: ignore[method-assign]
    click(view, {"t": "cancel"})
    assert done.wait(5)
    click(view, {"t": "detach"})
    assert ("detach",) in chain.calls
    later(view, clock)
    doc = browser_doc(view, wire)
    assert doc["h"]["st"] == "detached" and doc["h"]["det"] == chain.last_seq
    assert not doc["h"]["ctl"]


def test_sync_request_answers_with_the_document(wire: Wire) -> None:
    view, chain, clock = make_view()
    chain.say("hello")
    clock.advance(1)
    chain.say(" there")
    click(view, {"t": "sync", "n": 0})
    content, buffers = wire.customs()[-1]
    reply = decode_message(content, buffers)
    assert reply["t"] == "doc" and reply["doc"] == view.document
    late = {"v": 1, "n": 0, "tl": 4000, "h": {}, "e": []}
    assert apply_message(late, reply) and late["e"][0]["x"] == "hello there"


def test_display_is_updated_once_when_the_run_is_over(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        "IPython.display.display",
        lambda data, **kw: shown.append(("display", {**data, "_id": kw.get("display_id")})),
    )
    monkeypatch.setattr(
        "IPython.display.update_display",
        lambda data, **kw: shown.append(("update", {**data, "_id": kw.get("display_id")})),
    )
    view, chain, clock = make_view()
    view._ipython_display_()
    chain.say("The answer is <script>alert(1)</script> **42**.")
    clock.advance(1)
    chain.request_approval()
    clock.advance(1)
    assert [kind for kind, _ in shown] == ["display"], "no update while it is not over"
    view.answer(True)
    chain.say(" Done.", msg_id="m3")
    clock.advance(1)
    chain.stop()
    clock.advance(1)
    chain.changed()
    assert [kind for kind, _ in shown] == ["display", "update"]
    first, final = shown[0][1], shown[1][1]
    assert first["_id"] == final["_id"] and first["_id"].startswith("letta-nb-")
    assert final["text/plain"] == "<letta_nb run view: agent demo-analyst>"
    assert "application/vnd.jupyter.widget-view+json" in final
    html = final["text/html"]
    assert "completed" in html and "Done." in html and "<strong>42</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "✓ approved · write_report" in html


def test_a_rerun_retires_the_previous_view(wire: Wire) -> None:
    chain = FakeChain()
    first, _, _ = make_view(chain, key="cell-1")
    second, _, _ = make_view(chain, key="cell-1")
    assert first.comm is None and second.comm is not None
    assert len(chain._listeners) == 1
