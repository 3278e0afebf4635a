"""Sessions in conversations, end to end on the embedded server (demo brain): NAME / new / id /
default, a notebook bound to its own conversation, a busy conversation followed instead of
failing, approvals there, and a caller's otid re-sent after a kernel crash: one run, always."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from letta_nb.backend import Backend
from letta_nb.core.cursor import Cursor, CursorStore
from letta_nb.core.errors import ConfigurationError, NotFound
from letta_nb.session import Session

BOUND = 120.0  # hang guard only: waits return as soon as the run settles


def _session(url: str, store: Path) -> Session:
    backend = Backend(url, None, max_retries=0)
    backend.reattaches_otid = True
    s = Session(backend, store=CursorStore(store))
    s.agent = s.ensure_agent()
    return s


@pytest.fixture()
def session(embedded_server: str, tmp_path: Path) -> Iterator[Session]:
    s = _session(embedded_server, tmp_path / "cursors.db")
    yield s
    s.store.close()


def _answer(handle: object) -> str:
    text = handle.transcript  # type: ignore[attr-defined]
    return text.split("\n■")[0]


def test_a_named_conversation_is_made_once_and_remembers_only_its_own(session: Session) -> None:
    name = f"analysis {uuid.uuid4().hex[:6]}"
    first = session.send("/long 2", conversation=name, wait=True, timeout=BOUND)
    again = session.send("/recall", conversation=name, wait=True, timeout=BOUND)
    assert first.conversation_id == again.conversation_id and first.conversation_label == name
    assert _answer(again) == 'You sent 1 earlier message here; it was "/long 2".'
    other = session.send("/recall", conversation="new", wait=True, timeout=BOUND)
    assert other.conversation_id not in (None, first.conversation_id)
    assert _answer(other) == "Nothing earlier: this is the first message here."
    mine = session.send("/recall", wait=True, timeout=BOUND)  # the agent's own history
    assert mine.conversation_id is None and '"/long 2"' not in mine.transcript
    found = [c for c in session.conversations() if c["summary"] == name]
    assert [c["id"] for c in found] == [first.conversation_id]  # made once
    runs = session.backend.list_runs(conversation_id=first.conversation_id)
    assert {r["id"] for r in runs} == {first.run_id, again.run_id}
    frame = session.runs_frame(conversation=name)
    assert set(frame.conversation) == {first.conversation_id}


def test_another_kernel_finds_the_same_named_conversation(
    session: Session, embedded_server: str, tmp_path: Path
) -> None:
    name = f"shared {uuid.uuid4().hex[:6]}"
    mine = session.resolve_conversation(name)
    theirs = _session(embedded_server, tmp_path / "other.db").resolve_conversation(name)
    assert mine is not None and theirs is not None and mine["id"] == theirs["id"]


def test_a_conversation_id_names_its_agent(session: Session) -> None:
    conv = session.backend.create_conversation(session.agent["id"], summary="by id")
    h = session.send("/long 1", agent=None, conversation=conv["id"], wait=True, timeout=BOUND)
    assert h.conversation_id == conv["id"] and h.agent_id == conv["agent_id"]
    elsewhere = session.backend.create_agent(f"conv-elsewhere-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigurationError, match="belongs to agent"):
        session.send("x", agent=elsewhere["id"], conversation=conv["id"])
    with pytest.raises(NotFound, match="unknown conversation"):
        session.send("x", conversation="conv-00000000-0000-4000-8000-0000000000ff")
    with pytest.raises(ConfigurationError):
        session.send("x", conversation="  ")


def test_a_notebook_binds_to_its_own_conversation_and_keeps_it(
    session: Session, embedded_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    bound = session.use_conversation("new")
    assert bound is not None and bound["summary"] == "notebook analysis.ipynb"
    assert session.use_conversation("new")["id"] == bound["id"]  # re-running the cell
    session.send("/long 1", key="nb-1", wait=True, timeout=BOUND)
    h = session.send("/recall", key="nb-2", wait=True, timeout=BOUND)
    assert h.conversation_id == bound["id"] and '"/long 1"' in h.transcript
    # a kernel restart: the same notebook gets the same conversation back
    restarted = _session(embedded_server, tmp_path / "cursors.db")
    assert restarted.use_conversation("new")["id"] == bound["id"]
    # another notebook on the same agent gets its own
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "other.ipynb"))
    other = _session(embedded_server, tmp_path / "cursors.db").use_conversation("new")
    assert other["id"] != bound["id"]
    # `default` unbinds: sends go to the agent's own history again
    session.use_conversation("default")
    assert session.send("/long 1", key="nb-3", wait=True, timeout=BOUND).conversation_id is None


def test_a_busy_conversation_is_followed_not_failed(session: Session) -> None:
    conv = session.resolve_conversation("new")
    assert conv is not None
    first = session.send("/long 400 5", conversation=conv["id"], key="busy-1")
    first.follower._named.wait(BOUND)
    second = session.send("while busy", conversation=conv["id"], key="busy-2")
    assert second.wait(BOUND) == "completed", second.error
    assert second.busy_run == first.run_id and second.run_id == first.run_id
    assert "not sent" in (second.warning or "")
    assert first.wait(BOUND) == "completed"
    assert [r["id"] for r in session.backend.list_runs(conversation_id=conv["id"])] == [
        first.run_id
    ]  # the refused message started nothing


def test_an_approval_in_a_conversation(session: Session) -> None:
    h = session.send("/gated", conversation="new", wait=True, timeout=BOUND)
    assert h.status == "requires_approval" and h.approval.tool_calls[0]["name"] == "write_report"
    h.approve()
    assert h.wait(BOUND) == "completed", h.error
    runs = session.backend.list_runs(conversation_id=h.conversation_id)
    assert {r["id"] for r in runs} == set(h.runs) and len(h.runs) == 2
    assert session.backend.pending_approval(session.agent["id"]) == []  # the default history


def test_a_caller_otid_re_sent_after_a_crash_is_one_run(
    session: Session, embedded_server: str, tmp_path: Path
) -> None:
    name = f"item {uuid.uuid4().hex[:6]}"
    otid = str(uuid.uuid4())
    first = session.send("/long 3", conversation=name, otid=otid, wait=True, timeout=BOUND)
    assert first.status == "completed" and first.key == f"otid:{session.agent['id']}:{otid}"
    # the kernel died and its cursor store with it: the same item is sent again
    lost = _session(embedded_server, tmp_path / "lost.db")
    again = lost.send("/long 3", conversation=name, otid=otid, wait=True, timeout=BOUND)
    assert again.run_id == first.run_id and again.conversation_id == first.conversation_id
    # a fresh conversation for it, because the caller lost track of its conversation too
    fresh = _session(embedded_server, tmp_path / "fresh.db")
    before = {c["id"] for c in fresh.conversations(limit=1000)}
    moved = fresh.send("/long 3", conversation="new", otid=otid, wait=True, timeout=BOUND)
    assert moved.run_id == first.run_id and moved.conversation_id == first.conversation_id
    assert {c["id"] for c in fresh.conversations(limit=1000)} == before  # the unused one: gone
    assert fresh.store.get(moved.key).conversation_id == first.conversation_id
    assert len(session.backend.list_runs(conversation_id=first.conversation_id)) == 1


def test_a_cell_rebuilt_before_its_run_was_named_sends_its_otid_again(
    session: Session, embedded_server: str, tmp_path: Path
) -> None:
    conv = session.backend.create_conversation(session.agent["id"])
    otid = str(uuid.uuid4())
    first = session.send("/long 2", conversation=conv["id"], otid=otid, wait=True, timeout=BOUND)
    # a kernel that died between its POST and the first frame left a cursor with no run
    store = CursorStore(tmp_path / "crashed.db")
    store.put(
        Cursor(key="cell-x", agent_id=session.agent["id"], conversation_id=conv["id"], otid=otid)
    )
    store.close()
    rebuilt = _session(embedded_server, tmp_path / "crashed.db")
    h = rebuilt.send("/long 2", key="cell-x", conversation="new", wait=True, timeout=BOUND)
    assert h.run_id == first.run_id and h.conversation_id == conv["id"]
    assert len(session.backend.list_runs(conversation_id=conv["id"])) == 1


def test_many_items_each_in_its_own_conversation_are_one_run_each(
    session: Session, embedded_server: str, tmp_path: Path
) -> None:
    """A small batch: every item its own new conversation and deterministic otid; half of
    them re-sent by a second kernel that lost all state."""
    items = [
        (f"/long {1 + i % 3}", str(uuid.uuid5(uuid.NAMESPACE_URL, f"batch-{i}"))) for i in range(24)
    ]
    batch = uuid.uuid4().hex[:6]
    handles = [
        session.send(text, conversation=f"batch {batch} #{i}", otid=otid)
        for i, (text, otid) in enumerate(items)
    ]
    assert all(h.wait(BOUND) == "completed" for h in handles)
    second = _session(embedded_server, tmp_path / "second.db")
    again = [
        second.send(text, conversation=f"batch {batch} #{i}", otid=otid)
        for i, (text, otid) in enumerate(items)
        if i % 2 == 0
    ]
    assert all(h.wait(BOUND) == "completed" for h in again)
    assert [h.run_id for h in again] == [h.run_id for h in handles[::2]]
    convs = {h.conversation_id for h in handles}
    assert len(convs) == len(items)
    for h in handles:
        assert [r["id"] for r in session.backend.list_runs(conversation_id=h.conversation_id)] == [
            h.run_id
        ]
