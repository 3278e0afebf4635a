"""widgets.doc without widgets: the document, append-only ops, the header, the batching."""

from __future__ import annotations

import json

import pytest
from frontend_fakes import FakeChain

from letta_nb.widgets.doc import (
    Batcher,
    ViewDoc,
    apply_message,
    decode_doc,
    decode_message,
    dumps,
    empty_doc,
    encode_doc,
    encode_message,
)


def follow(chain: FakeChain, doc: ViewDoc, browser: dict) -> dict:
    """One flush: diff, number the message, apply it as the browser would; returns it."""
    ops, header, _visible = doc.diff(chain)
    msg = doc.message(ops, header)
    content, buffers = encode_message(msg)
    assert apply_message(browser, decode_message(content, buffers))
    return msg


def test_streamed_text_is_sent_once_append_only() -> None:
    chain, doc = FakeChain(), ViewDoc(tail=None, agent="demo")
    browser = empty_doc()
    words = [f" word{i}" for i in range(300)]
    sent_text = 0
    for k in range(0, 300, 7):  # a flush every 7 frames
        for w in words[k : k + 7]:
            chain.say(w)
        msg = follow(chain, doc, browser)
        for op in msg["o"]:
            sent_text += len(op[2]) if op[0] == "a" else len(op[2].get("x", ""))
    text = "".join(words)
    assert sent_text == len(text), "every character travels exactly once"
    assert browser["e"] == [{"k": "as", "x": text}] == doc.snapshot()["e"]


def test_a_message_longer_than_the_tail_keeps_its_end() -> None:
    chain, doc = FakeChain(), ViewDoc(tail=100)
    browser = empty_doc(100)
    chain.say("a" * 60)
    follow(chain, doc, browser)
    chain.say("b" * 60)  # appended: the browser trims to the tail
    follow(chain, doc, browser)
    assert browser["e"][0] == {"k": "as", "x": "a" * 40 + "b" * 60, "c": 20}
    chain.say("c" * 500)  # grew by more than the tail: re-set, never 500 characters sent
    msg = follow(chain, doc, browser)
    assert msg["o"] == [["e", 0, {"k": "as", "x": "c" * 100, "c": 520}]]
    assert browser["e"] == doc.snapshot()["e"]


def test_a_gap_is_detected_and_the_document_heals_it() -> None:
    chain, doc = FakeChain(), ViewDoc()
    chain.say("one")
    first = doc.message(*doc.diff(chain)[:2])
    chain.say(" two")
    second = doc.message(*doc.diff(chain)[:2])
    late = empty_doc()  # a view that only gets the second message (a page reload)
    assert not apply_message(late, second)
    reply = {"t": "doc", "doc": doc.snapshot()}
    assert apply_message(late, reply) and late["e"][0]["x"] == "one two"
    assert not apply_message(late, first)  # old messages are ignored (deduped by n)
    assert late["n"] == 2


def test_header_is_honest() -> None:
    chain, doc = FakeChain(), ViewDoc(agent="demo-analyst")
    chain.active = 3.25
    chain.say("hi")
    _ops, header, visible = doc.diff(chain)
    assert visible and header["ag"] == "demo-analyst" and header["st"] == "running"
    assert header["act"] == 3.25 and header["live"] and header["ctl"] and not header["fin"]
    assert header["tok"] is None and "det" not in header and "err" not in header
    chain.say(" more")
    _ops, header, visible = doc.diff(chain)
    assert not visible, "only the seq moved: no message needed for the header alone"
    chain.stop()
    _ops, header, visible = doc.diff(chain)
    assert visible and header["st"] == "completed" and header["tok"] == 42
    assert not header["ctl"] and header["fin"] and not header["live"], "controls go at the end"


def test_the_header_names_the_conversation_and_the_busy_run() -> None:
    chain = FakeChain()
    chain.say("hi")
    _ops, header, _ = ViewDoc(agent="demo-analyst").diff(chain)
    assert "cv" not in header  # the agent's own history: nothing to say
    chain.conversation_id = "conv-1234abcd-0000-4000-8000-000000000000"
    _ops, header, _ = ViewDoc(agent="demo-analyst").diff(chain)
    assert header["cv"] == "conv-1234abcd" and header["cid"] == chain.conversation_id
    doc = ViewDoc(agent="demo-analyst", conversation="my analysis")
    chain.warning = "the conversation was busy with run run-9: showing that run"
    _ops, header, visible = doc.diff(chain)
    assert visible and header["cv"] == "my analysis" and "busy with run run-9" in header["warn"]
    from letta_nb.core.render import header_text

    assert header_text("demo-analyst", "running", conversation="my analysis").startswith(
        "demo-analyst · my analysis · running"
    )


def test_detached_shows_its_seq_and_an_error_appears_once() -> None:
    chain, doc = FakeChain(), ViewDoc()
    chain.say("x")
    chain.detach()
    header = doc.diff(chain)[1]
    assert header["det"] == chain.last_seq and header["st"] == "detached" and not header["ctl"]
    failed = FakeChain()
    failed.feed("error_message", message="Simulated  upstream\nLLM failure")
    failed.error = "Simulated upstream LLM failure"
    failed.status = "failed"
    ops, header, _ = ViewDoc().diff(failed)
    assert "err" not in header, "the transcript shows it already"
    assert [op[2]["k"] for op in ops] == ["er"]
    other = FakeChain()
    other.error = "the server stopped"
    other.status = "error"
    assert ViewDoc().diff(other)[1]["err"] == "the server stopped"


def test_approval_outcome_replaces_the_request_where_it_was() -> None:
    chain, doc = FakeChain(), ViewDoc()
    browser = empty_doc()
    chain.think("plan")
    chain.request_approval('{"title": "Q3", "body": "# T\\n\\n| a |\\n|---|\\n| 1 |"}')
    msg = follow(chain, doc, browser)
    assert msg["h"]["ap"] == {"ids": ["call-1"], "s": "pending"}
    ask = browser["e"][1]
    assert ask["k"] == "ap" and ask["f"][1][:2] == ["body", "md"] and "o" not in ask
    chain.answer(True)
    msg = follow(chain, doc, browser)
    assert "ap" not in msg["h"]
    assert browser["e"][1]["o"] == {"ok": True, "why": None}
    assert [i["k"] for i in browser["e"]].count("ap") == 1, "shown once, where it was"


def test_denied_with_reason() -> None:
    chain, doc = FakeChain(), ViewDoc()
    browser = empty_doc()
    chain.request_approval()
    follow(chain, doc, browser)
    chain.answer(False, "numbers not reviewed")
    follow(chain, doc, browser)
    assert browser["e"][0]["o"] == {"ok": False, "why": "numbers not reviewed"}


def test_snapshot_round_trip_and_compression() -> None:
    chain, doc = FakeChain(), ViewDoc()
    chain.say("token " * 500)
    doc.diff(chain)
    snap = doc.snapshot()
    assert decode_doc(encode_doc(snap)) == snap
    assert len(encode_doc(snap)) < len(dumps(snap)) / 4
    small = {"t": "d", "n": 1, "o": [["a", 0, "hi"]]}
    assert encode_message(small) == (small, [])
    big = {"t": "d", "n": 2, "o": [["a", 0, "token " * 200]]}
    content, buffers = encode_message(big)
    assert content == {"t": "d", "n": 2, "z": 1} and len(buffers[0]) < 200
    assert decode_message(content, buffers) == big
    assert json.loads(json.dumps(snap)) == snap


def test_batcher_bounds_the_message_rate() -> None:
    b = Batcher(10.0, max_wait=1.0, worth=2400)
    assert b.due_in(0.0, urgent=False, pending_bytes=0) is None
    b.mark(0.0)
    assert b.due_in(0.0, urgent=False, pending_bytes=10) == 0.0, "leading edge: at once"
    b.sent(0.0)
    b.mark(0.01)
    assert b.due_in(0.01, urgent=False, pending_bytes=10) == pytest.approx(1.0)
    assert b.due_in(0.01, urgent=False, pending_bytes=5000) == pytest.approx(0.09)
    assert b.due_in(0.01, urgent=True, pending_bytes=0) == pytest.approx(0.09)
    b.sent(0.05, data=False)  # a status change alone does not use up the window
    b.mark(0.06)
    assert b.due_in(0.06, urgent=True, pending_bytes=0) == pytest.approx(0.04)
    b = Batcher(10.0)
    b.sent(0.0, data=False)
    b.mark(0.03)  # a resumed run's first frame right after its status message: at once
    assert b.due_in(0.03, urgent=False, pending_bytes=10) == 0.0
    # sustained: however fast frames come, at most 10 messages in a second
    sent, now = 0, 0.0
    b = Batcher(10.0)
    while now < 10.0:
        b.mark(now)
        if b.due_in(now, urgent=False, pending_bytes=10_000) == 0:
            b.sent(now)
            sent += 1
        now += 0.001
    assert 95 <= sent <= 101


def test_the_header_travels_with_the_text_it_describes() -> None:
    chain, doc = FakeChain(), ViewDoc()
    browser = empty_doc()
    chain.say("almost")
    follow(chain, doc, browser)
    chain.say(" done.")
    chain.stop()
    msg = follow(chain, doc, browser)
    assert ["a", 0, " done."] in msg["o"] and msg["h"]["st"] == "completed"
    assert browser["e"][0]["x"] == "almost done." and browser["h"]["st"] == "completed"
