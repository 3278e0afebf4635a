"""Runner rules the demo brain relies on: a Sleep keeps the open message open, and tools get
the agent's workdir from the runner (never from visible arguments)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import pytest
from letta_client import Letta

from letta_nb.server import EmbeddedServer, start_in_process
from letta_nb.server.brains.base import accepts_workdir
from letta_nb.server.brains.registry import DEMO_HANDLE
from tests.server.server_helpers import bg, frame_json, frames, post_sse


@pytest.fixture(scope="module")
def demo_server() -> Iterator[EmbeddedServer]:
    with start_in_process() as srv:  # default brains: the demo brain
        yield srv


def test_sleep_between_deltas_keeps_one_message(client: Letta, agent_id: str) -> None:
    got = bg(client, agent_id, "long 5 20")
    deltas = [c for c in got if c.message_type == "assistant_message"]
    assert len(deltas) == 5
    assert len({c.id for c in deltas}) == 1 and len({c.otid for c in deltas}) == 1
    stored = [
        m for m in client.runs.messages.list(got[0].run_id) if m.message_type == "assistant_message"
    ]
    assert len(stored) == 1 and stored[0].content == "w0000 w0001 w0002 w0003 w0004"


def test_demo_long_with_delay_is_one_message(demo_server: EmbeddedServer) -> None:
    c = Letta(base_url=demo_server.base_url, max_retries=0, timeout=30)
    agent = c.agents.create(model=DEMO_HANDLE).id
    got = bg(c, agent, "/long 6 10")
    deltas = [x for x in got if x.message_type == "assistant_message"]
    assert "".join(d.content for d in deltas) == "token1 token2 token3 token4 token5 token6"
    assert len({d.id for d in deltas}) == 1


def test_workdir_is_passed_by_runner_not_shown(demo_server: EmbeddedServer) -> None:
    c = Letta(base_url=demo_server.base_url, max_retries=0, timeout=30)
    agent = c.agents.create(model=DEMO_HANDLE).id
    got = bg(c, agent, "/gated")
    assert got[-2].stop_reason == "requires_approval"
    with httpx.Client(base_url=demo_server.base_url, timeout=30) as http:
        body = post_sse(http, f"/v1/runs/{got[0].run_id}/stream", {})
    request = [frame_json(f)[1] for f in frames(body) if '"approval_request_message"' in f]
    args = "".join(r["tool_call"]["arguments"] or "" for r in request)
    assert set(json.loads(args)) == {"title", "body"}  # no server path in the card
    assert len(request) == 1 + math.ceil(len(args) / 8)
    pending = c.agents.retrieve(agent, include=["agent.pending_approval"]).pending_approval
    call_id = pending.tool_calls[0].tool_call_id  # type: ignore[union-attr]
    after = list(
        c.agents.messages.create(
            agent,
            messages=[
                {
                    "type": "approval",
                    "approvals": [{"type": "approval", "tool_call_id": call_id, "approve": True}],
                }
            ],
            streaming=True,
            background=True,
            stream_tokens=True,
        )
    )
    ret = next(x for x in after if x.message_type == "tool_return_message")
    assert ret.status == "success", ret.tool_return
    written = json.loads(ret.tool_return)
    assert written["relative_path"].startswith("reports/")
    workdir = demo_server.db_path.parent / "workdirs" / agent
    assert (workdir / written["relative_path"]).is_file()


def test_accepts_workdir_convention() -> None:
    def with_dir(title: str, workdir: str) -> str:
        return workdir

    def without(title: str) -> str:
        return title

    assert accepts_workdir(with_dir) and not accepts_workdir(without)
    assert not accepts_workdir(len)  # builtins without a signature are simply not given one
