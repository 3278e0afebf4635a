"""REST routes through the SDK: health, models, agents, messages, runs, pagination, auth, cancel."""

from __future__ import annotations

import threading

import httpx
import pytest
from letta_client import APIStatusError, AuthenticationError, Letta, NotFoundError
from scripted_brain import HANDLE, ScriptedBrain
from server_helpers import bg, post_sse, wait_until

from letta_nb.server import start_in_process


def test_health_and_models(client: Letta) -> None:
    assert client.health().status == "ok"
    assert HANDLE in [m.handle for m in client.models.list()]


def test_agent_crud(client: Letta) -> None:
    agent = client.agents.create(
        name="crud", model=HANDLE, memory_blocks=[{"label": "human", "value": "me"}]
    )
    got = client.agents.retrieve(agent.id, include=["agent.pending_approval"])
    assert (got.name, got.model, got.pending_approval) == ("crud", HANDLE, None)
    assert got.blocks[0].label == "human"
    assert agent.id in {a.id for a in client.agents.list(limit=1000).items}
    client.agents.delete(agent.id)
    with pytest.raises(NotFoundError):
        client.agents.retrieve(agent.id)
    with pytest.raises(NotFoundError) as err:  # a model handle that does not exist
        client.agents.create(model="nope/none")
    assert "nope/none" in str(err.value.body["detail"])


def test_non_streaming_and_messages_lists(client: Letta, agent_id: str) -> None:
    resp = client.agents.messages.create(agent_id, messages=[{"role": "user", "content": "tool"}])
    assert [m.message_type for m in resp.messages] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert resp.stop_reason.stop_reason == "end_turn" and resp.usage.step_count == 2
    run_id = resp.messages[0].run_id
    run_msgs = client.runs.messages.list(run_id).items
    assert run_msgs[0].message_type == "user_message" and run_msgs[0].content == "tool"
    steps = client.runs.steps.list(run_id).items
    assert len(steps) == 2 and steps[0].stop_reason == "end_turn"  # newest first
    agent_msgs = client.agents.messages.list(agent_id, order="asc").items
    assert agent_msgs[0].message_type == "system_message"  # the default history's own
    assert [m.id for m in agent_msgs[1:]] == [m.id for m in run_msgs]
    resp2 = client.agents.messages.create(agent_id, input="think")
    assert [m.message_type for m in resp2.messages] == ["reasoning_message", "assistant_message"]


def test_background_requires_streaming(http: httpx.Client, agent_id: str) -> None:
    r = http.post(
        f"/v1/agents/{agent_id}/messages",
        json={"messages": [{"role": "user", "content": "hi"}], "background": True},
    )
    assert r.status_code == 422 and "background" in r.json()["detail"]


def test_deprecated_stream_endpoint(client: Letta, agent_id: str) -> None:
    got = list(
        client.agents.messages.stream(
            agent_id,
            messages=[{"role": "user", "content": "echo x"}],
            background=True,
            stream_tokens=False,
        )
    )
    assert [c.message_type for c in got] == [
        "ping",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert got[1].content == "Echo: x" and got[1].seq_id == 2


def test_run_pagination_never_repeats(client: Letta) -> None:
    agent = client.agents.create(model=HANDLE)
    for i in range(7):
        client.agents.messages.create(agent.id, messages=[{"role": "user", "content": f"e {i}"}])
    every = [r.id for r in client.runs.list(agent_id=agent.id, limit=1000).items]
    assert len(every) == 7
    for order in ("asc", "desc"):
        walked = [r.id for r in client.runs.list(agent_id=agent.id, limit=2, order=order)]
        assert len(walked) == len(set(walked)) == 7
        assert walked == (every if order == "desc" else every[::-1])
    page = client.runs.list(agent_id=agent.id, limit=2, before=every[4], order="desc").items
    assert [r.id for r in page] == every[2:4]


def test_active_runs_and_cancel(client: Letta, agent_id: str, http: httpx.Client) -> None:
    stream = client.agents.messages.create(
        agent_id,
        messages=[{"role": "user", "content": "long 400 20"}],
        streaming=True,
        background=True,
        stream_tokens=True,
    )
    first = next(iter(stream))
    run_id = first.run_id
    active = client.runs.list(agent_id=agent_id, active=True).items
    assert [r.id for r in active] == [run_id] and active[0].status == "running"
    assert [r["id"] for r in http.get("/v1/runs/active", params={"agent_id": agent_id}).json()] == [
        run_id
    ]
    rest: list = []
    reader = threading.Thread(target=lambda: rest.extend(stream))
    reader.start()
    wait_until(lambda: len(rest) >= 3, 30, "the reader got no frames")  # mid-run
    assert client.agents.messages.cancel(agent_id, run_ids=[run_id]) == {run_id: "cancelled"}
    reader.join(10)
    assert rest[-1].message_type == "stop_reason" and rest[-1].stop_reason == "cancelled"
    run = client.runs.retrieve(run_id)
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    body = post_sse(http, f"/v1/runs/{run_id}/stream", {})
    assert body.endswith(
        'data: {"message_type": "stop_reason", "stop_reason": "cancelled"}\n\ndata: [DONE]\n\n'
    )
    assert client.agents.messages.cancel(agent_id, run_ids=[run_id]) == {run_id: "cancelled"}
    assert client.runs.list(agent_id=agent_id, active=True).items == []


def test_failure_paths(client: Letta, agent_id: str, http: httpx.Client) -> None:
    seen: list = []
    with pytest.raises(APIStatusError) as err:
        for c in client.agents.messages.create(
            agent_id,
            messages=[{"role": "user", "content": "fail"}],
            streaming=True,
            background=True,
            stream_tokens=True,
        ):
            seen.append(c)
    assert err.value.status_code == 200 and err.value.body["error_type"] == "llm_error"
    assert seen[-1].stop_reason == "llm_api_error"
    run = client.runs.retrieve(seen[0].run_id)
    assert run.status == "failed" and run.metadata["error"]["error_type"] == "llm_error"
    body = post_sse(http, f"/v1/runs/{run.id}/stream", {})
    assert "event: error\ndata: " in body and "[DONE]" not in body
    boom = bg(client, agent_id, "boom")
    assert boom[-2].stop_reason == "end_turn"
    ret = next(c for c in boom if c.message_type == "tool_return_message")
    assert ret.status == "error" and "tool exploded" in ret.tool_return


def test_token_auth() -> None:
    brain = ScriptedBrain()
    with start_in_process(brains={brain.handle: brain}, token="s3cret") as srv:
        assert httpx.get(srv.base_url + "/v1/health/").status_code == 200
        r = httpx.get(srv.base_url + "/v1/agents/")
        assert r.status_code == 401 and "detail" in r.json()
        with pytest.raises(AuthenticationError):
            Letta(base_url=srv.base_url, api_key="wrong", max_retries=0).agents.list()
        ok = Letta(base_url=srv.base_url, api_key="s3cret", max_retries=0)
        agent = ok.agents.create(model=HANDLE)
        assert bg(ok, agent.id, "echo authed")[-2].stop_reason == "end_turn"


def test_default_model_is_demo_when_installed() -> None:
    from letta_nb.server.brains.registry import DEMO_HANDLE, default_brains

    assert DEMO_HANDLE in default_brains()
    with start_in_process() as srv:
        c = Letta(base_url=srv.base_url, max_retries=0)
        assert c.agents.create().model == DEMO_HANDLE
        assert DEMO_HANDLE in [m.handle for m in c.models.list()]


def test_run_times_first_token_and_duration(client: Letta, agent_id: str) -> None:
    """`ttft_ns` (first model output, not the ping) and `total_duration_ns` feed run history."""
    stream = client.agents.messages.create(
        agent_id,
        messages=[{"role": "user", "content": "long 5 20"}],
        streaming=True,
        background=True,
        stream_tokens=True,
        include_pings=True,
    )
    run_id = next(c.run_id for c in stream)
    for _ in stream:
        pass
    run = client.runs.retrieve(run_id)
    assert run.status == "completed"
    assert isinstance(run.ttft_ns, int) and isinstance(run.total_duration_ns, int)
    assert 0 < run.ttft_ns < run.total_duration_ns
    # five tokens 20 ms apart: the first arrives well before the end, not with the stop_reason
    assert run.total_duration_ns - run.ttft_ns >= 60_000_000
