"""The conversation sender: one conversation per item attempt, named after the batch, the item
and the attempt, and looked up before it is made again (creating one is not idempotent).
Against the embedded server."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from letta_nb.batch.keys import explicit_key, item_digest, item_summary
from letta_nb.batch.sender import ConversationSender
from letta_nb.batch.state import ItemState
from letta_nb.session import Session
from tests.batch.batch_helpers import BOUND, Recorder, conversations_of, items_of, make_session


def _sender(session: Session, key: str = "batch:key:sender-test") -> ConversationSender:
    assert session.agent is not None
    return ConversationSender(session.backend, session.agent["id"], key)


def test_each_attempt_has_one_conversation_found_again_by_its_summary(session: Session) -> None:
    sender = _sender(session)
    item = ItemState(3, "d")
    sender.prepare(item, again=False)
    first = item.conversation_id
    assert first is not None and first.startswith("conv-")
    conv = session.backend.get_conversation(first)
    assert conv["summary"] == item_summary(sender.key, 3, 0) == "batch:key:sender-test item 3"
    sender.prepare(item, again=True)  # made and stored: nothing is asked
    assert item.conversation_id == first
    lost = ItemState(3, "d")  # the same attempt, its conversation id lost with a kernel
    sender.prepare(lost, again=True)
    assert lost.conversation_id == first
    other = ItemState(13, "d")  # "item 13" contains "item 1...": the match is exact
    sender.prepare(other, again=True)
    assert other.conversation_id not in (None, first)
    item.status = "failed"
    item.reset()  # retry: a new attempt, a conversation of its own
    sender.prepare(item, again=True)
    assert item.conversation_id not in (None, first)
    assert session.backend.get_conversation(item.conversation_id)["summary"].endswith(
        "item 3 attempt 1"
    )
    assert len(conversations_of(session)) == 3


def test_a_send_goes_to_the_items_conversation_and_cancel_reaches_unnamed_runs(
    session: Session,
) -> None:
    sender = _sender(session)
    item = ItemState(0, "d")
    sender.prepare(item, again=False)
    chain = sender.chain(item)
    assert chain.conversation_id == item.conversation_id
    sender.send(chain, item, "/long 400 20", "otid-00000000-0000-4000-8000-000000000001")
    rid = chain.named(BOUND)
    assert rid is not None
    assert session.backend.get_run(rid)["conversation_id"] == item.conversation_id
    item.status = "starting"  # sent, its run not named here: cancelled by its conversation
    assert sender.cancel([item]) == {rid: "cancelled"}
    assert chain.wait(BOUND) == "cancelled"
    assert sender.cancel([]) == {}  # nothing named, nothing sent: no request at all


def test_a_kernel_that_dies_between_the_create_and_the_store_leaves_one_conversation(
    session: Session,
    embedded_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    check_isolation: Any,
) -> None:
    made: list[str] = []
    created, release = threading.Event(), threading.Event()
    real = session.backend.create_conversation

    def create(agent_id: str, *, summary: str | None = None) -> dict[str, Any]:
        row = real(agent_id, summary=summary)
        if summary is not None and summary.endswith(" item 1"):
            made.append(row["id"])
            created.set()  # on the server now, its id not stored yet: the kernel dies here
            release.wait(BOUND)
        return row

    monkeypatch.setattr(session.backend, "create_conversation", create)
    messages = ["/long 3 0", "/long 4 0", "/long 5 0"]
    batch = session.map(messages, concurrency=1)
    assert created.wait(BOUND)
    died = tmp_path / "died.db"  # cursors.db as the dead kernel left it
    with sqlite3.connect(session.store.path) as src, sqlite3.connect(died) as dst:
        src.backup(dst)
    batch.runner._stop.set()  # the dead kernel's runner does nothing more
    release.set()
    batch.detach()

    recorder = Recorder()
    fresh = make_session(embedded_server, died, recorder)
    fresh.agent = session.agent
    again = fresh.map(messages, concurrency=1)
    assert again.key == batch.key and again.wait(BOUND) == "done"
    assert again.counts == {"completed": 3}
    assert again.items[1].conversation_id == made[0]  # found by its summary, not made again
    lookups = [c for c in recorder.calls if c == "GET /v1/conversations/"]
    assert len(lookups) == 1  # only the item whose create may have happened looked
    assert session.agent is not None
    check_isolation(embedded_server, session.agent["id"], items_of(again))
    fresh.store.close()


def test_an_item_sent_before_its_kernel_died_follows_the_run_in_its_conversation(
    session: Session,
    runs_of: Any,
    embedded_server: str,
    check_isolation: Any,
) -> None:
    """The kernel died after item 1's send, before its run was named, and the server no
    longer maps the item's otid (past its retention, say: here the run has another otid):
    the run in the item's own conversation is found and followed, nothing is sent again."""
    messages = ["/long 4 0", "/long 5 0"]
    assert session.agent is not None
    key = explicit_key("sent-before")
    sender = ConversationSender(session.backend, session.agent["id"], key)
    digests = [item_digest(pos, m) for pos, m in enumerate(messages)]
    sent = ItemState(1, digests[1], status="starting", started_at=time.time())
    sender.prepare(sent, again=False)
    chain = sender.chain(sent)
    sender.send(chain, sent, messages[1], "otid-00000000-0000-4000-8000-0000000000aa")
    assert chain.wait(BOUND) == "completed"
    store = session.store
    store.put_batch(key, {"agent_id": session.agent["id"], "size": 2, "created_at": time.time()})
    store.put_batch_items(key, [(0, ItemState(0, digests[0]).to_record()), (1, sent.to_record())])
    batch = session.map(messages, key="sent-before", concurrency=2)
    assert batch.wait(BOUND) == "done" and batch.counts == {"completed": 2}
    assert batch.items[1].runs == [chain.run_id]
    assert batch.frame.answer[1] == "token1 token2 token3 token4 token5"
    assert len(runs_of()) == 2  # item 0's send and item 1's one run
    check_isolation(embedded_server, session.agent["id"], items_of(batch))
