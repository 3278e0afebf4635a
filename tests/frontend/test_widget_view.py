"""RunView on a fake follower, no kernel: rendering, approvals, cancel/detach, throttling."""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as widgets
import pytest
from frontend_fakes import FakeClock, FakeFollower

from letta_nb.core.errors import ApprovalError
from letta_nb.widgets import InlinePump, RunView, ThreadPump


def make_view(follower: FakeFollower | None = None, **kw: Any) -> tuple[RunView, FakeFollower,
                                                                      FakeClock]:
    follower = follower or FakeFollower()
    clock = FakeClock()
    view = RunView(follower, agent="demo-analyst", clock=clock, pump=InlinePump(), **kw)
    return view, follower, clock


def texts(view: RunView) -> list[str]:
    return [w.value for w in view.messages.children]


def test_renders_each_message_kind_distinctly() -> None:
    view, f, clock = make_view()
    f.feed("reasoning_message", id="r1", reasoning="let me think")
    clock.advance(1)
    f.feed("tool_call_message", id="t1",
           tool_call={"name": "describe", "arguments": '{"x": 1}', "tool_call_id": "c1"})
    clock.advance(1)
    f.feed("tool_return_message", id="t2", name="describe", status="success",
           tool_return="42", tool_call_id="c1")
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
    value = view.messages.children[0].value
    assert len(str(f.transcript.entries[0].text)) == 3000
    assert "2,900 earlier characters" in value
    assert "&lt;0499&gt;" in value and "&lt;0482&gt;" not in value
    assert len(value) < 1000


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


def test_throttle_10000_chunks_at_most_10_flushes_per_simulated_second() -> None:
    view, f, clock = make_view()
    sets: list[float] = []
    view.header.observe(lambda _c: sets.append(clock()), names="value")
    clock.advance(1)
    f.say("x", msg_id="m")
    msg = view.messages.children[0]
    msg_sets: list[float] = []
    msg.observe(lambda _c: msg_sets.append(clock()), names="value")
    for _ in range(10_000):
        clock.advance(0.0002)  # 5,000 chunks a simulated second, 2 s in all
        f.say("y", msg_id="m")
    assert 15 <= len(msg_sets) <= 21
    assert len(sets) <= 23  # the header follows the same throttle
    for second in (1001.0, 1002.0):
        in_window = [t for t in msg_sets if second <= t < second + 1]
        assert len(in_window) <= 10
    f.stop()  # terminal status: flushed at once, whole text present
    assert len(str(f.transcript.entries[0].text)) == 10_001
    assert view.messages.children[0].value.count("y") >= 3999
    assert f.status in view.header.value


def test_thread_pump_limits_real_comm_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared pump thread: count the comm 'update' messages actually sent."""
    import comm

    sent: list[dict[str, Any]] = []
    lock = threading.Lock()

    def publish(self: Any, msg_type: str, data: Any = None, *a: Any, **k: Any) -> None:
        if msg_type == "comm_msg" and data and data.get("method") == "update":
            with lock:
                sent.append(data)

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
        msg_updates = [d for d in sent if "value" in d.get("state", {})
                       and "tok" in str(d["state"]["value"])]
        assert n > 1000
        assert 3 <= len(msg_updates) <= 14, len(msg_updates)
        assert view.messages.children[0].model_id == item_id
        assert view.messages.children[0].value.count("tok") == min(n, 4000 // 4)
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
