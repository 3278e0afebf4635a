"""Approvals: approve, deny, client results, legacy form, conflicts, wrong ids, cancel; and
exactly once: concurrent answers, cancel racing approve, answered runs never rewritten."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from letta_client import APIStatusError, BadRequestError, ConflictError, Letta

from letta_nb.server import start_in_process
from tests.server.scripted_brain import ScriptedBrain
from tests.server.server_helpers import bg, post_sse

KW = {"streaming": True, "background": True, "stream_tokens": True, "include_pings": True}


def _gate(client: Letta, agent_id: str) -> tuple[str, str]:
    got = bg(client, agent_id, "gated")
    assert got[-2].stop_reason == "requires_approval"
    run = client.runs.retrieve(got[0].run_id)
    assert (run.status, run.stop_reason) == ("completed", "requires_approval")
    assert run.id not in {r.id for r in client.runs.list(agent_id=agent_id, active=True).items}
    pending = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    assert pending is not None and isinstance(pending.tool_calls, list)
    assert pending.tool_calls[0].arguments == '{"target": "prod-db", "reason": "user asked"}'
    return run.id, pending.tool_calls[0].tool_call_id


def _answer(client: Letta, agent_id: str, item: dict) -> list:
    return list(client.agents.messages.create(agent_id, messages=[item], **KW))


def test_approve_runs_tool_in_a_new_run(client: Letta, agent_id: str) -> None:
    gate_run, call_id = _gate(client, agent_id)
    got = _answer(
        client,
        agent_id,
        {
            "type": "approval",
            "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
        },
    )
    assert got[0].run_id != gate_run and got[0].seq_id == 1
    assert got[1].message_type == "tool_return_message" and got[1].seq_id == 2
    assert got[1].tool_return == "dangerous_op executed on prod-db because user asked"
    assert got[-2].stop_reason == "end_turn"
    msgs = client.runs.messages.list(got[0].run_id).items
    assert [m.message_type for m in msgs] == [
        "approval_response_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert (
        client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
        is None
    )


def test_deny_with_reason_is_persisted_not_streamed(client: Letta, agent_id: str) -> None:
    _, call_id = _gate(client, agent_id)
    got = _answer(
        client,
        agent_id,
        {
            "type": "approval",
            "approvals": [
                {
                    "type": "approval",
                    "tool_call_id": call_id,
                    "approve": False,
                    "reason": "not today",
                }
            ],
        },
    )
    assert "tool_return_message" not in [c.message_type for c in got]
    msgs = client.runs.messages.list(got[0].run_id).items
    ret = next(m for m in msgs if m.message_type == "tool_return_message")
    assert ret.status == "error"
    assert ret.tool_return == "Error: request to call tool denied. User reason: not today"
    assert msgs[0].message_type == "approval_response_message" and msgs[0].reason == "not today"


@pytest.mark.parametrize("form", ["approvals_tool", "tool_return"])
def test_client_tool_result(client: Letta, agent_id: str, form: str) -> None:
    _, call_id = _gate(client, agent_id)
    item = (
        {
            "type": "approval",
            "approvals": [
                {
                    "type": "tool",
                    "tool_call_id": call_id,
                    "tool_return": "client ran it",
                    "status": "success",
                }
            ],
        }
        if form == "approvals_tool"
        else {
            "type": "tool_return",
            "tool_returns": [
                {"tool_call_id": call_id, "status": "success", "tool_return": "client ran it"}
            ],
        }
    )
    got = _answer(client, agent_id, item)
    assert "tool_return_message" not in [c.message_type for c in got]
    assert "client ran it" in "".join(
        c.content for c in got if c.message_type == "assistant_message"
    )


def test_legacy_approval_form(client: Letta, agent_id: str) -> None:
    _gate(client, agent_id)
    pending = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    got = _answer(
        client, agent_id, {"type": "approval", "approve": True, "approval_request_id": pending.id}
    )
    assert got[1].message_type == "tool_return_message"


def test_message_while_pending(client: Letta, agent_id: str, http: httpx.Client) -> None:
    _, call_id = _gate(client, agent_id)
    with pytest.raises(ConflictError) as err:
        client.agents.messages.create(agent_id, messages=[{"role": "user", "content": "hi"}])
    detail = err.value.body["detail"]
    assert detail["code"] == "PENDING_APPROVAL" and detail["pending_request_id"].startswith(
        "message-"
    )
    assert err.value.response.headers["x-should-retry"] == "false"
    seen = []
    with pytest.raises(APIStatusError) as err2:
        for c in client.agents.messages.create(
            agent_id, messages=[{"role": "user", "content": "hi"}], **KW
        ):
            seen.append(c)
    assert err2.value.status_code == 200 and err2.value.body["error_type"] == "internal_error"
    assert [c.message_type for c in seen] == ["ping", "stop_reason"]
    run = client.runs.retrieve(seen[0].run_id)
    assert run.status == "failed" and run.metadata["error"]["seq_id"] is None
    body = post_sse(http, f"/v1/runs/{run.id}/stream", {})
    assert body.endswith('"seq_id":3}\n\n') and "[DONE]" not in body
    # still pending, and answering it works
    got = _answer(
        client,
        agent_id,
        {
            "type": "approval",
            "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
        },
    )
    assert got[-2].stop_reason == "end_turn"


def test_wrong_tool_call_id_keeps_approval_pending(client: Letta, agent_id: str) -> None:
    _, call_id = _gate(client, agent_id)
    wrong = {
        "type": "approval",
        "approvals": [{"type": "approval", "tool_call_id": "call_wrong", "approve": True}],
    }
    with pytest.raises(BadRequestError):
        client.agents.messages.create(agent_id, messages=[wrong])
    with pytest.raises(APIStatusError) as err:
        _answer(client, agent_id, wrong)
    assert "Invalid tool call IDs" in err.value.body["detail"]
    pending = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    assert pending.tool_calls[0].tool_call_id == call_id


def test_double_approval_is_a_clear_400(client: Letta, agent_id: str) -> None:
    _, call_id = _gate(client, agent_id)
    item = {
        "type": "approval",
        "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
    }
    _answer(client, agent_id, item)
    runs_before = len(client.runs.list(agent_id=agent_id).items)
    with pytest.raises(BadRequestError) as err:
        _answer(client, agent_id, item)
    assert "No tool call is currently awaiting approval" in err.value.body["detail"]
    assert len(client.runs.list(agent_id=agent_id).items) == runs_before


def test_cancel_while_pending_unblocks_agent(client: Letta, agent_id: str) -> None:
    gate_run, _ = _gate(client, agent_id)
    assert client.agents.messages.cancel(agent_id, run_ids=[gate_run]) == {gate_run: "cancelled"}
    run = client.runs.retrieve(gate_run)
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    assert (
        client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
        is None
    )
    got = bg(client, agent_id, "echo free again")
    assert got[-2].stop_reason == "end_turn"


def test_tool_rule_and_toggle_gate_a_custom_tool(client: Letta) -> None:
    from tests.server.scripted_brain import HANDLE

    tool = client.tools.create(
        source_code=(
            "def shout(target: str, reason: str) -> str:\n"
            '    """Shout at a target."""\n'
            "    return f'{target.upper()}!'\n"
        )
    )
    assert tool.name == "shout" and any(t.id == tool.id for t in client.tools.list().items)
    agent = client.agents.create(
        model=HANDLE,
        tool_ids=[tool.id],
        tool_rules=[{"type": "requires_approval", "tool_name": "shout"}],
    )
    assert bg(client, agent.id, "custom shout")[-2].stop_reason == "requires_approval"
    client.agents.messages.cancel(agent.id)
    client.agents.tools.update_approval("shout", agent_id=agent.id, body_requires_approval=False)
    got = bg(client, agent.id, "custom shout")
    assert got[-2].stop_reason == "end_turn"
    assert any(c.message_type == "tool_return_message" and c.tool_return == "X!" for c in got)
    names = {t.name for t in client.agents.tools.list(agent.id).items}
    assert {"shout", "add", "dangerous_op"} <= names


# ---- exactly once ------------------------------------------------------------------------
class _CountingBrain(ScriptedBrain):
    """The scripted brain whose gated tool counts its executions (thread-safe)."""

    handle = "test/counting"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

        def dangerous_op(target: str, reason: str) -> str:
            with self._lock:
                self.calls.append(target)
            return f"dangerous_op executed on {target} because {reason}"

        self.tools = {**ScriptedBrain.tools, "dangerous_op": dangerous_op}


@pytest.fixture(scope="module")
def counting() -> Iterator[tuple[Letta, _CountingBrain, str]]:
    brain = _CountingBrain()
    with start_in_process(brains={brain.handle: brain}) as srv:
        yield Letta(base_url=srv.base_url, max_retries=0, timeout=60), brain, srv.base_url


def _approve_item(call_id: str) -> dict:
    return {
        "type": "approval",
        "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
    }


def _post(base_url: str, path: str, body: dict) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as h:
        return h.post(path, json=body)


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_approvals_run_the_tool_exactly_once(
    counting: tuple[Letta, _CountingBrain, str], trial: int
) -> None:
    client, brain, base = counting
    agent = client.agents.create(model=brain.handle).id
    _, call_id = _gate(client, agent)
    before = len(brain.calls)
    body = {"messages": [_approve_item(call_id)], **KW}
    barrier = threading.Barrier(10)

    def answer() -> httpx.Response:
        barrier.wait(30)
        return _post(base, f"/v1/agents/{agent}/messages", body)

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: answer(), range(10)))
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) == 1, [r.status_code for r in replies]
    assert all(r.status_code == 400 for r in replies if r not in ok)
    assert "tool_return_message" in ok[0].text and '"stop_reason":"end_turn"' in ok[0].text
    assert len(brain.calls) - before == 1  # the tool ran once
    runs = client.runs.list(agent_id=agent).items
    assert len(runs) == 2  # the gate and the one answer: the losers ran nothing


@pytest.mark.parametrize("trial", range(8))
def test_cancel_racing_approve_is_one_or_the_other(
    counting: tuple[Letta, _CountingBrain, str], trial: int
) -> None:
    client, brain, base = counting
    agent = client.agents.create(model=brain.handle).id
    gate_run, call_id = _gate(client, agent)
    before = len(brain.calls)
    barrier = threading.Barrier(2)

    def approve() -> httpx.Response:
        barrier.wait(30)
        return _post(base, f"/v1/agents/{agent}/messages", {"messages": [_approve_item(call_id)]})

    def cancel() -> httpx.Response:
        barrier.wait(30)
        return _post(base, f"/v1/agents/{agent}/messages/cancel", {"run_ids": [gate_run]})

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(approve), pool.submit(cancel)
        approved, cancelled = first.result(), second.result()
    assert cancelled.json() == {gate_run: "cancelled"}
    gate = client.runs.retrieve(gate_run)
    history = [m.message_type for m in client.runs.messages.list(gate_run).items]
    if approved.status_code == 200:  # the approval won: the tool ran once, the gate untouched
        assert len(brain.calls) - before == 1
        assert (gate.status, gate.stop_reason) == ("completed", "requires_approval")
        assert "approval_response_message" not in history
    else:  # the cancel won: a stored denial, and the tool never ran
        assert approved.status_code == 400
        assert len(brain.calls) == before
        assert (gate.status, gate.stop_reason) == ("cancelled", "cancelled")
        denial = client.runs.messages.list(gate_run).items[-1]
        assert denial.message_type == "tool_return_message" and denial.status == "error"
    pending = client.agents.retrieve(agent, include=["agent.pending_approval"]).pending_approval
    assert pending is None  # either way the agent is free


def test_cancel_after_the_approval_won_applies_to_the_answering_run(
    counting: tuple[Letta, _CountingBrain, str],
) -> None:
    client, brain, base = counting
    agent = client.agents.create(model=brain.handle).id
    gate_run, call_id = _gate(client, agent)
    before = len(brain.calls)
    with httpx.Client(base_url=base, timeout=60) as h:
        body = {"messages": [_approve_item(call_id)], **KW}
        with h.stream("POST", f"/v1/agents/{agent}/messages", json=body) as resp:
            lines = resp.iter_lines()
            first = next(lines)  # the answering run has started
            answering = json.loads(first.removeprefix("data: "))["run_id"]
            reply = h.post(f"/v1/agents/{agent}/messages/cancel", json={"run_ids": [gate_run]})
            rest = "\n".join(lines)
    assert reply.json() == {gate_run: "cancelled"}
    assert len(brain.calls) - before == 1  # approved: it ran, once
    run = client.runs.retrieve(answering)
    assert run.status in ("cancelled", "completed")
    assert ("cancelled" in rest) == (run.status == "cancelled")
    gate = client.runs.retrieve(gate_run)
    assert (gate.status, gate.stop_reason) == ("completed", "requires_approval")


def test_cancelling_an_answered_run_never_rewrites_its_history(
    client: Letta, agent_id: str
) -> None:
    gate_run, call_id = _gate(client, agent_id)
    _answer(client, agent_id, _approve_item(call_id))
    history = [m.id for m in client.runs.messages.list(gate_run).items]
    assert client.agents.messages.cancel(agent_id, run_ids=[gate_run]) == {gate_run: "cancelled"}
    gate = client.runs.retrieve(gate_run)
    assert (gate.status, gate.stop_reason) == ("completed", "requires_approval")
    assert [m.id for m in client.runs.messages.list(gate_run).items] == history


def test_legacy_form_checks_approval_request_id(client: Letta, agent_id: str) -> None:
    _, call_id = _gate(client, agent_id)
    wrong = {"type": "approval", "approve": True, "approval_request_id": "message-not-it"}
    with pytest.raises(BadRequestError) as err:
        client.agents.messages.create(agent_id, messages=[wrong])
    assert "approval_request_id" in err.value.body["detail"]
    with pytest.raises(APIStatusError):
        _answer(client, agent_id, wrong)  # streaming: the answering run fails
    pending = client.agents.retrieve(agent_id, include=["agent.pending_approval"]).pending_approval
    assert pending is not None and pending.tool_calls[0].tool_call_id == call_id  # still pending
    by_call_id = {"type": "approval", "approve": False, "approval_request_id": call_id}
    got = _answer(client, agent_id, by_call_id)  # Letta converts it to the tool_call_id form
    assert got[-2].stop_reason == "end_turn"
