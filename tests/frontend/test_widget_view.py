"""RunView on a fake follower, no kernel: rendering, approvals, cancel/detach, throttling."""

from __future__ import annotations

import html
import re
import threading
import time
from typing import Any

import ipywidgets as widgets
import pytest
from frontend_fakes import FakeClock, FakeFollower

from letta_nb.core.errors import ApprovalError
from letta_nb.widgets import InlinePump, RunView, ThreadPump


def make_view(
    follower: FakeFollower | None = None, **kw: Any
) -> tuple[RunView, FakeFollower, FakeClock]:
    follower = follower or FakeFollower()
    clock = FakeClock()
    view = RunView(follower, agent="demo-analyst", clock=clock, pump=InlinePump(), **kw)
    return view, follower, clock


def texts(view: RunView) -> list[str]:
    return [w.value for w in view.messages.children]


def visible_text(view: RunView) -> str:
    """The live message's text as its segments show it, joined without separators (a segment
    cut at a newline drops that newline: the block boundary is the line break)."""
    parts = [w.value for w in view.messages.children if "lnb-seg" in w.value]
    return "".join(html.unescape(re.sub(r"<[^>]+>", "", p)) for p in parts)


def test_renders_each_message_kind_distinctly() -> None:
    view, f, clock = make_view()
    f.feed("reasoning_message", id="r1", reasoning="let me think")
    clock.advance(1)
    f.feed(
        "tool_call_message",
        id="t1",
        tool_call={"name": "describe", "arguments": '{"x": 1}', "tool_call_id": "c1"},
    )
    clock.advance(1)
    f.feed(
        "tool_return_message",
        id="t2",
        name="describe",
        status="success",
        tool_return="42",
        tool_call_id="c1",
    )
    clock.advance(1)
    f.say("the answer is 42")
    clock.advance(1)
    f.feed("error_message", message="boom")
    clock.advance(1)
    f.stop()
    html = texts(view)
    assert "<details open><summary>thinking</summary>let me think" in html[0]
    assert "color:#6b7280;font-style:italic" in html[0]
    assert "<b>describe</b>" in html[1] and "{&quot;x&quot;: 1}" in html[1]
    assert "[success]: 42" in html[2]
    assert "the answer is 42" in html[3]
    assert "color:#b91c1c" in html[4] and "boom" in html[4]
    assert "end_turn" in html[5]
    assert "demo-analyst" in view.header.value and "completed" in view.header.value
    assert view.cancel_button.disabled and view.detach_button.disabled


def test_repr_is_deterministic_and_has_no_ids() -> None:
    view, _f, _ = make_view()
    assert repr(view) == "<letta_nb run view: agent demo-analyst>"
    bundle = view._repr_mimebundle_()
    assert bundle["text/plain"] == "<letta_nb run view: agent demo-analyst>"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    anonymous = RunView(FakeFollower(), pump=InlinePump())
    assert repr(anonymous) == "<letta_nb run view>"


def test_approve_click_sends_once_disables_and_shows_outcome() -> None:
    view, f, _ = make_view()
    f.request_approval()
    card = view.approval
    assert card.layout.display is None  # visible
    assert "write_report" in card.title.value
    assert not card.approve_button.disabled
    card.approve_button.click()
    card.approve_button.click()
    card.deny_button.click()
    assert [c for c in f.calls if c[0] == "answer"] == [("answer", True, None)]
    assert card.approve_button.disabled and card.deny_button.disabled and card.reason.disabled
    assert card.outcome.value == "approved"
    # the follower moves on to the new run: the card keeps its outcome
    f.approval = None
    f.changed()
    assert card.outcome.value == "approved"
    assert card.approve_button.disabled


def test_frontend_click_message_runs_the_handler() -> None:
    view, f, _ = make_view()
    f.request_approval()
    view.approval.approve_button._handle_button_msg(None, {"event": "click"}, [])
    assert f.calls == [("answer", True, None)]


def test_deny_sends_the_reason() -> None:
    view, f, _ = make_view()
    f.request_approval()
    view.approval.reason.value = "  not in production  "
    view.approval.deny_button.click()
    assert f.calls == [("answer", False, "not in production")]
    assert view.approval.outcome.value == "denied: not in production"


def test_failed_send_reopens_the_card() -> None:
    view, f, _ = make_view()
    f.request_approval()

    def refuse(approve: bool, reason: str | None = None) -> None:
        f.calls.append(("answer", approve, reason))
        raise ApprovalError("server said no")

    f.answer = refuse  # type: ignore[method-assign]
    view.approval.approve_button.click()
    assert view.approval.outcome.value == "could not send: server said no"
    assert not view.approval.approve_button.disabled
    view.approval.approve_button.click()
    assert len(f.calls) == 2


def test_answer_from_elsewhere_disables_the_card() -> None:
    view, f, clock = make_view()
    f.request_approval()
    f.approval.begin(False, "policy")  # e.g. --auto-deny raced the human
    f.approval.succeeded("run-2")
    clock.advance(1)
    f.changed()
    assert view.approval.approve_button.disabled
    assert view.approval.outcome.value == "denied: policy"
    view.approval.approve_button.click()
    assert f.calls == []


def test_second_approval_request_gets_fresh_buttons() -> None:
    view, f, clock = make_view()
    f.request_approval()
    view.approval.approve_button.click()
    clock.advance(1)
    f.request_approval(tool_call_id="call-2")
    assert not view.approval.approve_button.disabled
    assert view.approval.outcome.value == ""
    view.approval.deny_button.click()
    assert f.calls == [("answer", True, None), ("answer", False, None)]
    assert view.approval.outcome.value == "denied"


def test_cancel_is_server_side_detach_is_local() -> None:
    view, f, _ = make_view()
    worker = view._cancel_in_background()  # what a click does: off the shell thread
    assert view.cancel_button.disabled
    worker.join(5.0)
    assert f.calls == [("cancel",)]
    assert "cancel requested" in view.notice.value
    view2, f2, _ = make_view()
    view2.detach_button.click()
    assert f2.calls == [("detach",)]
    assert "detached" in view2.header.value
    assert view2.cancel_button.disabled and view2.detach_button.disabled


def test_tail_limit_and_full_text_kept_in_python() -> None:
    view, f, clock = make_view(tail_chars=100)
    for i in range(500):
        f.say(f"<{i:04d}>")  # 6 characters each, HTML-escaped in the view
        clock.advance(0.01)
    f.stop()
    value = "".join(texts(view))
    assert len(str(f.transcript.entries[0].text)) == 3000
    # about `tail` characters stay visible, a notice counts the others exactly
    found = re.search(r"… ([\d,]+) earlier characters", value)
    assert found, value
    earlier = int(found.group(1).replace(",", ""))
    shown = visible_text(view)
    assert 2850 <= earlier <= 2900 and earlier + len(shown) == 3000
    assert shown == str(f.transcript.entries[0].text)[earlier:]
    assert "<0499>" in shown and "<0474>" not in shown  # text without spaces: hard cuts
    assert value.count("earlier characters") == 1
    assert value.count("lnb-assistant-message") == 1  # one message, however many widgets
    assert len(value) < 1500


def test_long_live_message_resends_only_its_open_segment() -> None:
    view, f, clock = make_view(tail_chars=4000)
    values: list[str] = []
    for i in range(2000):
        f.say(f" token{i}" + ("\n" if i % 97 == 96 else ""))
        clock.advance(0.01)  # ~10 flushes per 100 tokens
        for w in view.messages.children:
            if not getattr(w, "_lnb_watched", False):
                w._lnb_watched = True  # type: ignore[attr-defined]
                w.observe(lambda c: values.append(c["new"]), names="value")
    clock.advance(1)
    f.changed()  # the last tokens' flush
    # every update of the live message carries at most one segment's worth of text
    assert values and max(len(v) for v in values) < view.messages.segment * 1.3 + 300
    text = str(f.transcript.entries[0].text)
    earlier = int(
        re.search(r"… ([\d,]+) earlier", "".join(texts(view)))
        .group(1)  # type: ignore[union-attr]
        .replace(",", "")
    )
    shown = visible_text(view)
    # seamless: the segments joined (a newline cut is the block boundary) are the text's tail
    assert shown.replace("\n", "") == text[earlier:].replace("\n", "")
    assert " token1999" in shown and text[earlier:].startswith(shown[:50])
    assert 3000 <= len(text) - earlier <= 4000 + view.messages.segment
    assert len(view.messages.children) <= 1 + 4000 // view.messages.segment + 1
    assert "".join(texts(view)).count("lnb-assistant-message") == 1


def test_only_changed_messages_are_touched_and_sealed_never_resent() -> None:
    view, f, clock = make_view()
    counts: dict[int, int] = {}
    clock.advance(1)

    def watch(w: widgets.HTML) -> None:
        counts.setdefault(id(w), 0)
        w.observe(lambda _c: counts.__setitem__(id(w), counts[id(w)] + 1), names="value")

    f.say("first run text", msg_id="a")
    f.stop(status="running")  # run-1 stopped (e.g. requires_approval), chain goes on
    first = view.messages.children[0]
    watch(first)
    f.runs.append("run-2")
    for i in range(50):
        clock.advance(0.2)
        f.say(f" w{i}", msg_id="b")
    second = view.messages.children[-1]
    assert counts[id(first)] == 0
    assert view.messages.sealed >= 2  # run-1's message and its stop_reason
    assert "w49" in second.value


def test_throttle_10000_chunks_at_most_10_comm_messages_per_simulated_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import comm

    view, f, clock = make_view()
    # The header's elapsed time follows the real clock: on a loaded machine it would change
    # within a simulated second and add a message that this count is not about.
    f.started_at = None
    events: list[tuple[float, str]] = []

    def publish(self: Any, msg_type: str, data: Any = None, *a: Any, **k: Any) -> None:
        events.append((clock(), msg_type))

    monkeypatch.setattr(comm.DummyComm, "publish_msg", publish)
    clock.advance(1)
    f.say("x", msg_id="m")
    for _ in range(10_000):
        clock.advance(0.0002)  # 5,000 chunks a simulated second, 2 s in all
        f.say("y", msg_id="m")
    # every comm message (updates, opens of new segments, closes) counts against max_hz
    flushes = sorted({t for t, _ in events})
    assert len(flushes) >= 6  # still live: the text moves several times a second
    for second in (1001.0, 1002.0):
        in_window = [t for t, _ in events if second <= t < second + 1]
        assert len(in_window) <= 12, in_window
    assert len([e for e in events if 1001.0 <= e[0] < 1003.0]) <= 23  # incl. one-time opens
    f.stop()  # terminal status: flushed at once, whole text present
    text = str(f.transcript.entries[0].text)
    assert len(text) == 10_001
    shown = visible_text(view)
    assert len(shown) >= 3000 and text.endswith(shown)
    assert f.status in view.header.value


def test_thread_pump_limits_real_comm_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared pump thread: count the comm 'update' messages actually sent."""
    import comm

    sent: list[dict[str, Any]] = []
    lock = threading.Lock()

    opens = [0]

    def publish(self: Any, msg_type: str, data: Any = None, *a: Any, **k: Any) -> None:
        if msg_type == "comm_msg" and data and data.get("method") == "update":
            with lock:
                sent.append(data)
        elif msg_type == "comm_open" and sent:
            with lock:
                opens[0] += 1

    monkeypatch.setattr(comm.DummyComm, "publish_msg", publish)
    f = FakeFollower()
    pump = ThreadPump(idle_exit=1.0)
    view = RunView(f, agent="demo", pump=pump)
    try:
        sent.clear()
        f.say("start", msg_id="m")
        deadline = time.monotonic() + 5
        while not view.messages.children and time.monotonic() < deadline:
            time.sleep(0.01)
        item_id = view.messages.children[0].model_id
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.0:
            f.say(" tok", msg_id="m")
            n += 1
        f.stop()
        deadline = time.monotonic() + 5
        while "completed" not in view.header.value and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        msg_updates = [
            d for d in sent if "value" in d.get("state", {}) and "tok" in str(d["state"]["value"])
        ]
        assert n > 1000
        # the open segment is updated in place; a full one gets a widget once (<= 1 s of
        # streaming: a few segments) and is never re-sent
        assert 3 <= len(msg_updates) + opens[0] <= 16, (len(msg_updates), opens)
        assert item_id in {w.model_id for w in view.messages.children} or opens[0] > 0
        shown = visible_text(view)
        assert shown.count("tok") >= min(n, 3000 // 4)
        assert str(f.transcript.entries[0].text).endswith(shown)
    finally:
        view.close()


def test_transcript_swap_rebuilds_view() -> None:
    view, f, clock = make_view()
    f.say("old")
    from letta_nb.core.transcript import Transcript

    f.transcript = Transcript()
    clock.advance(1)
    f.say("new")
    assert len(view.messages.children) == 1
    assert "new" in view.messages.children[0].value
