"""Conversations through letta-client against the embedded server: isolated histories, the
per-history lock, otid re-attach, resume, approvals per history, delete, pages, migration.

(The recorded shapes and Letta's quirks are compared in ``test_golden_conversations``.)
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from letta_client import ConflictError, Letta, NotFoundError
from scripted_brain import HANDLE, ScriptedBrain
from server_helpers import wait_until

from letta_nb.server import EmbeddedServer, start_in_process

KW = {"streaming": True, "background": True, "stream_tokens": True, "include_pings": True}


def say(client: Letta, conv: str, text: str, otid: str | None = None, **kw: Any) -> list[Any]:
    item: dict[str, Any] = {"role": "user", "content": text}
    if otid is not None:
        item["otid"] = otid
    return list(client.conversations.messages.create(conv, messages=[item], **{**KW, **kw}))


def answer_text(items: list[Any]) -> str:
    return "".join(i.content for i in items if i.message_type == "assistant_message")


def start_long(server: EmbeddedServer, conv: str, text: str, otid: str | None = None) -> Any:
    """A long run started on its own connection; returns (thread, first-frame event, box)."""
    box: dict[str, Any] = {}
    started = threading.Event()

    def read() -> None:
        item: dict[str, Any] = {"role": "user", "content": text}
        if otid:
            item["otid"] = otid
        try:
            with (
                httpx.Client(base_url=server.base_url, timeout=60) as c,
                c.stream(
                    "POST", f"/v1/conversations/{conv}/messages", json={"messages": [item], **KW}
                ) as s,
            ):
                box["status"] = s.status_code
                for line in s.iter_lines():
                    if '"run_id":"' in line and "run_id" not in box:
                        box["run_id"] = line.split('"run_id":"')[1].split('"')[0]
                        started.set()
        except httpx.HTTPError as exc:  # the server stopped under it (the restart test)
            box["error"] = exc
        started.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert started.wait(30)
    return t, box


def test_each_history_sees_only_its_own_messages(client: Letta, agent_id: str) -> None:
    a = client.conversations.create(agent_id=agent_id).id
    b = client.conversations.create(agent_id=agent_id).id
    say(client, a, "alpha one")
    say(client, b, "bravo one")
    client.agents.messages.create(agent_id, messages=[{"role": "user", "content": "default one"}])
    assert answer_text(say(client, a, "recall")) == "1 earlier: [alpha one]"
    assert answer_text(say(client, b, "recall")) == "1 earlier: [bravo one]"
    default = client.agents.messages.create(
        agent_id, messages=[{"role": "user", "content": "recall"}]
    )
    assert "".join(m.content for m in default.messages) == "1 earlier: [default one]"
    # the default path reaches the same default history as the agents endpoint
    got = say(client, "default", "recall", agent_id=agent_id)
    assert answer_text(got) == "2 earlier: [default one] [recall]"
    listed = [m.content for m in client.conversations.messages.list(a, order="asc")]
    assert listed[1:] == ["alpha one", "Echo: alpha one", "recall", "1 earlier: [alpha one]"]


def test_busy_is_one_409_with_the_holder_and_the_sdk_does_not_resend(
    server: EmbeddedServer, agent_id: str
) -> None:
    sent: list[str] = []
    hooks = {"request": [lambda r: sent.append(f"{r.method} {r.url.path}")]}
    with httpx.Client(event_hooks=hooks) as h:
        retrying = Letta(base_url=server.base_url, max_retries=2, http_client=h)  # SDK default
        conv = retrying.conversations.create(agent_id=agent_id).id
        thread, box = start_long(server, conv, "long 100 20")
        sent.clear()
        with pytest.raises(ConflictError) as raised:
            say(retrying, conv, "while busy", str(uuid.uuid4()))
        assert raised.value.body["run_id"] == box["run_id"]
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert sent == [f"POST /v1/conversations/{conv}/messages"]  # one request, no re-send
        with pytest.raises(ConflictError):  # non-streaming sends take the lock too
            retrying.conversations.messages.create(
                conv, messages=[{"role": "user", "content": "plain"}], streaming=False
            )
        thread.join(30)
        runs = retrying.runs.list(conversation_id=conv)
        assert [r.id for r in runs] == [box["run_id"]]  # nothing else ever started


def test_non_streaming_send_takes_the_lock_and_finishes(http: httpx.Client, agent_id: str) -> None:
    conv = http.post("/v1/conversations/", params={"agent_id": agent_id}, json={}).json()["id"]
    r = http.post(
        f"/v1/conversations/{conv}/messages",
        json={"messages": [{"role": "user", "content": "echo quiet"}], "streaming": False},
    )
    assert r.status_code == 200 and r.json()["messages"][-1]["content"] == "Echo: quiet"
    run = http.get(f"/v1/runs/{r.json()['messages'][0]['run_id']}").json()
    assert (run["status"], run["conversation_id"], run["background"]) == ("completed", conv, False)
    assert run["metadata"] == {"run_type": "send_conversation_message"}
    assert http.get("/v1/runs/", params={"agent_id": agent_id, "active": "true"}).json() == []
    again = http.post(
        f"/v1/conversations/{conv}/messages",
        json={"messages": [{"role": "user", "content": "echo again"}], "streaming": False},
    )
    assert again.status_code == 200  # the lock was released at its end


def test_same_otid_reattaches_during_after_and_across_conversations(
    client: Letta, server: EmbeddedServer, agent_id: str
) -> None:
    conv = client.conversations.create(agent_id=agent_id).id
    otid = str(uuid.uuid4())
    thread, box = start_long(server, conv, "long 40 20", otid)
    during = say(client, conv, "long 40 20", otid)
    thread.join(30)
    after = say(client, conv, "some other text", otid)
    elsewhere = client.conversations.create(agent_id=agent_id).id
    moved = say(client, elsewhere, "long 40 20", otid)  # an otid names one message of the agent
    runs = {getattr(i, "run_id", None) for i in during + after + moved} - {None}
    assert runs == {box["run_id"]}
    assert [i.seq_id for i in during[:2]] == [1, 2]  # a reader from seq 1
    assert [r.id for r in client.runs.list(agent_id=agent_id)] == [box["run_id"]]
    assert client.runs.list(conversation_id=elsewhere).items == []
    assert [m.message_type for m in client.conversations.messages.list(elsewhere)] == [
        "system_message"
    ]


def test_concurrent_sends_of_one_otid_make_exactly_one_run(
    server: EmbeddedServer, agent_id: str
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as h:
        conv = h.post("/v1/conversations/", params={"agent_id": agent_id}, json={}).json()["id"]
    otid = str(uuid.uuid4())
    body = {"messages": [{"role": "user", "content": "long 30 10", "otid": otid}], **KW}

    def send(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            r = c.post(f"/v1/conversations/{conv}/messages", json=body)
            if r.status_code == 409:
                return 409, r.json()["run_id"]
            return r.status_code, r.text.split('"run_id":"')[1].split('"')[0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert {status for status, _ in results} <= {200, 409}
    assert len({rid for _, rid in results}) == 1  # every answer names the one run
    with httpx.Client(base_url=server.base_url, timeout=60) as h:
        assert len(h.get("/v1/runs/", params={"conversation_id": conv}).json()) == 1


def test_resume_by_otid_needs_the_run_of_this_history(
    client: Letta, http: httpx.Client, agent_id: str
) -> None:
    conv = client.conversations.create(agent_id=agent_id).id
    otid = str(uuid.uuid4())
    run_id = say(client, conv, "echo hi", otid)[0].run_id
    replayed = list(client.conversations.messages.stream(conv, otid=otid))
    assert replayed[0].run_id == run_id and replayed[-1].message_type == "usage_statistics"
    other = client.conversations.create(agent_id=agent_id).id
    with pytest.raises(NotFoundError):
        list(client.conversations.messages.stream(other, otid=otid))
    with pytest.raises(NotFoundError):
        list(client.conversations.messages.stream("default", agent_id=agent_id, run_id=run_id))
    second = str(uuid.uuid4())  # any otid of a multi-message request names its run
    items = [
        {"role": "user", "content": "echo a", "otid": str(uuid.uuid4())},
        {"role": "user", "content": "echo b", "otid": second},
    ]
    multi = list(client.conversations.messages.create(conv, messages=items, **KW))
    resumed = list(client.conversations.messages.stream(conv, otid=second))
    assert resumed[0].run_id == multi[0].run_id != run_id


def test_approvals_belong_to_their_history(
    client: Letta, http: httpx.Client, agent_id: str
) -> None:
    conv = client.conversations.create(agent_id=agent_id).id
    asked = say(client, conv, "approve")
    assert asked[-2].stop_reason == "requires_approval"
    # the default history has nothing pending: an answer there is refused, a message works
    call = client.conversations.messages.list(conv, order="desc", limit=1).items[0]
    call_id = call.tool_calls[0].tool_call_id
    approval = {
        "type": "approval",
        "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
    }
    refused = http.post(f"/v1/agents/{agent_id}/messages", json={"messages": [approval]})
    assert refused.status_code == 400 and "No tool call" in refused.json()["detail"]
    ok = client.agents.messages.create(agent_id, messages=[{"role": "user", "content": "echo x"}])
    assert ok.stop_reason.stop_reason == "end_turn"
    # the same 409 body on both paths while a history waits
    say(client, "default", "approve", agent_id=agent_id)
    for path in (f"/v1/agents/{agent_id}/messages", f"/v1/conversations/{conv}/messages"):
        r = http.post(
            path,
            json={"messages": [{"role": "user", "content": "hi"}], "streaming": False},
        )
        assert r.status_code == 409 and r.json()["detail"]["code"] == "PENDING_APPROVAL"
    pending = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    assert (
        pending is not None and getattr(pending, "conversation_id", None) is None
    )  # default first
    done = list(client.conversations.messages.create(conv, messages=[approval], **KW))
    assert done[1].message_type == "tool_return_message"
    assert client.runs.retrieve(done[0].run_id).conversation_id == conv
    still = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    assert still is not None and still.run_id != asked[0].run_id  # the default one stays


def test_delete_cancels_its_runs_and_hides_it(
    client: Letta, server: EmbeddedServer, agent_id: str
) -> None:
    conv = client.conversations.create(agent_id=agent_id, summary="to delete").id
    thread, box = start_long(server, conv, "long 3000 20")
    client.conversations.delete(conv)
    thread.join(30)
    assert client.runs.retrieve(box["run_id"]).status == "cancelled"
    for call in (
        lambda: client.conversations.retrieve(conv),
        lambda: say(client, conv, "hi"),
        lambda: client.conversations.messages.list(conv),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert conv not in [c.id for c in client.conversations.list(agent_id=agent_id)]


def test_list_search_pages_and_message_cursors(
    client: Letta, http: httpx.Client, agent_id: str
) -> None:
    ids = [client.conversations.create(agent_id=agent_id, summary=f"Row {i}").id for i in range(5)]
    assert [c.id for c in client.conversations.list(agent_id=agent_id, limit=2)] == ids[:-3:-1]
    page2 = client.conversations.list(agent_id=agent_id, limit=2, after=ids[3])
    assert [c.id for c in page2] == [ids[2], ids[1]]
    assert [c.id for c in client.conversations.list(agent_id=agent_id, order="asc")] == ids
    found = client.conversations.list(agent_id=agent_id, summary_search="row 3")
    assert [c.id for c in found] == [ids[3]]
    say(client, ids[0], "echo one")
    fork = client.conversations.fork(ids[0]).id
    say(client, fork, "echo two")
    msgs = client.conversations.messages.list(fork, order="asc").items
    shared = msgs[1].id  # a message the fork shares with its source: its own row here
    rest = client.conversations.messages.list(fork, order="asc", after=shared).items
    assert [m.id for m in rest] == [m.id for m in msgs[2:]]
    assert (
        http.get(f"/v1/conversations/{ids[1]}/messages", params={"after": shared}).status_code
        == 400
    )  # a cursor must name a message of this conversation


OLD_SCHEMA = """
CREATE TABLE agents (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
  name TEXT NOT NULL, model TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
  config TEXT NOT NULL, pending TEXT, last_stop_reason TEXT);
CREATE TABLE tools (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
  name TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE runs (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
  agent_id TEXT NOT NULL, created_at REAL NOT NULL, completed_at REAL, status TEXT NOT NULL,
  stop_reason TEXT, background INTEGER NOT NULL, metadata TEXT NOT NULL, otid_key TEXT,
  last_seq INTEGER NOT NULL DEFAULT 0, usage TEXT, total_duration_ns INTEGER);
CREATE TABLE frames (run_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE messages (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
  agent_id TEXT NOT NULL, run_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE steps (ord INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
  run_id TEXT NOT NULL, data TEXT NOT NULL);
"""


def test_a_database_from_before_conversations_opens_and_gains_them(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    old = sqlite3.connect(db)
    old.executescript(OLD_SCHEMA)
    agent = "agent-00000000-0000-4000-8000-000000000001"
    old.execute(
        "INSERT INTO agents (id, name, model, created_at, updated_at, config) "
        "VALUES (?, 'old', ?, 1, 1, '{}')",
        (agent, HANDLE),
    )
    old.execute(
        "INSERT INTO messages (id, agent_id, run_id, data) VALUES ('message-old', ?, 'run-old', ?)",
        (agent, '{"id": "message-old", "message_type": "user_message", "content": "from before"}'),
    )
    old.commit()
    old.close()
    brain = ScriptedBrain()
    with start_in_process(db, brains={brain.handle: brain}) as srv:
        client = Letta(base_url=srv.base_url, max_retries=0)
        listed = client.agents.messages.list(agent, order="asc").items
        assert [m.id for m in listed] == ["message-old"]  # the old history is the default one
        reply = client.agents.messages.create(
            agent, messages=[{"role": "user", "content": "recall"}]
        )
        assert "[from before]" in reply.messages[-1].content
        conv = client.conversations.create(agent_id=agent).id
        assert answer_text(say(client, conv, "recall")) == "0 earlier:"
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(messages)")}
    assert {"conversation_id", "copied"} <= cols


def test_a_restart_frees_a_conversation_its_run_held(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    brain = ScriptedBrain()
    with start_in_process(db, brains={brain.handle: brain}) as srv:
        client = Letta(base_url=srv.base_url, max_retries=0)
        agent = client.agents.create(name="r", model=HANDLE).id
        conv = client.conversations.create(agent_id=agent).id
        thread, box = start_long(srv, conv, "long 5000 20")
        wait_until(lambda: srv.app.state.engine.live_run(box["run_id"]) is not None, 10, "live")
    thread.join(30)
    with start_in_process(db, brains={brain.handle: brain}) as srv:
        client = Letta(base_url=srv.base_url, max_retries=0)
        assert client.runs.retrieve(box["run_id"]).status == "failed"  # closed as an orphan
        assert answer_text(say(client, conv, "echo free")) == "Echo: free"


def test_an_otid_re_attaches_for_the_retention_window_only(tmp_path: Path) -> None:
    """Within the 3 h a re-sent otid replays its run; past them it is a new message (and its
    old run cannot be resumed: 410)."""
    import time as _time

    offset = [0.0]
    brain = ScriptedBrain()
    with start_in_process(
        tmp_path / "s.sqlite3", brains={brain.handle: brain}, clock=lambda: _time.time() + offset[0]
    ) as srv:
        client = Letta(base_url=srv.base_url, max_retries=0)
        agent = client.agents.create(name="retention", model=HANDLE).id
        conv = client.conversations.create(agent_id=agent).id
        otid = str(uuid.uuid4())
        first = say(client, conv, "echo one", otid)[0].run_id
        offset[0] = 3 * 3600 - 60  # still inside
        assert say(client, conv, "echo one", otid)[0].run_id == first
        offset[0] = 3 * 3600 + 60  # past the retention
        later = say(client, conv, "echo one", otid)[0].run_id
        assert later != first
        with httpx.Client(base_url=srv.base_url) as h:
            old = h.post(f"/v1/conversations/{conv}/stream", json={"run_id": first})
            assert old.status_code == 410 and "EXPIRED" in old.json()["detail"]
        assert len(client.runs.list(conversation_id=conv).items) == 2
