"""Background streams, resume, replay, readers, keepalive, otid re-attach, concurrency."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from letta_client import APIStatusError, Letta

from letta_nb.server import start_in_process
from tests.server.scripted_brain import HANDLE
from tests.server.server_helpers import bg, frame_json, frames, post_sse


def test_background_stream_seq_and_terminal(client: Letta, agent_id: str) -> None:
    got = bg(client, agent_id, "echo hello there")
    types = [c.message_type for c in got]
    assert types == [
        "ping",
        "assistant_message",
        "assistant_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert [c.seq_id for c in got[:4]] == [1, 2, 3, 4]
    run = client.runs.retrieve(got[0].run_id)
    assert (run.status, run.stop_reason, run.background) == ("completed", "end_turn", True)
    assert len({c.id for c in got[1:4]}) == 1
    usage = client.runs.usage.retrieve(run.id)
    assert usage.total_tokens == got[-1].total_tokens > 0


def test_resume_is_exclusive_and_byte_identical(
    client: Letta, agent_id: str, http: httpx.Client
) -> None:
    run_id = bg(client, agent_id, "long 40")[0].run_id
    full = post_sse(http, f"/v1/runs/{run_id}/stream", {"starting_after": 0})
    head = "".join(frames(full)[:10])
    tail = post_sse(http, f"/v1/runs/{run_id}/stream", {"starting_after": 10})
    assert head + tail == full
    assert frame_json(frames(tail)[0])[1]["seq_id"] == 11
    assert frames(full)[-1] == "data: [DONE]\n\n"
    # batch_size and include_pings do not change a replay
    again = post_sse(
        http,
        f"/v1/runs/{run_id}/stream",
        {"starting_after": 0, "batch_size": 3, "include_pings": False},
    )
    assert again == full
    # the SDK resume works with the positional path_run_id
    sdk = list(client.runs.messages.stream(run_id, starting_after=40))
    assert [c.message_type for c in sdk][-2:] == ["stop_reason", "usage_statistics"]


def test_resume_at_or_after_end_closes(client: Letta, agent_id: str, http: httpx.Client) -> None:
    run_id = bg(client, agent_id, "echo a b")[0].run_id
    last = len(frames(post_sse(http, f"/v1/runs/{run_id}/stream", {})))
    t0 = time.monotonic()
    assert post_sse(http, f"/v1/runs/{run_id}/stream", {"starting_after": last}) == ""
    assert post_sse(http, f"/v1/runs/{run_id}/stream", {"starting_after": 10_000}) == ""
    assert (
        post_sse(http, f"/v1/runs/{run_id}/stream", {"starting_after": last - 1})
        == "data: [DONE]\n\n"
    )
    assert time.monotonic() - t0 < 2


def test_resume_errors(client: Letta, agent_id: str, http: httpx.Client) -> None:
    r = http.post("/v1/runs/run-00000000-0000-4000-8000-000000001234/stream", json={})
    assert r.status_code == 404 and "detail" in r.json()
    r = http.post("/v1/runs/run-123/stream", json={})
    assert r.status_code == 400 and r.json()["detail"].startswith("INVALID_ARGUMENT")
    assert (
        http.get(f"/v1/runs/{'run-00000000-0000-4000-8000-000000001234'}/stream").status_code == 405
    )
    fg = list(
        client.agents.messages.create(
            agent_id,
            messages=[{"role": "user", "content": "echo fg"}],
            streaming=True,
            background=False,
            include_pings=True,
        )
    )
    assert all(getattr(c, "seq_id", None) is None for c in fg)
    r = http.post(f"/v1/runs/{fg[0].run_id}/stream", json={})
    assert r.status_code == 400 and "background" in r.json()["detail"]
    run_id = bg(client, agent_id, "echo x")[0].run_id
    # a missing body is {} (the real server answers 500 here)
    assert post_sse(http, f"/v1/runs/{run_id}/stream", None).endswith("data: [DONE]\n\n")


def test_retention_gives_410() -> None:
    """Retention reads the server's clock: moved past it, a resume is a 410 (no sleeping)."""
    from tests.server.scripted_brain import ScriptedBrain

    now = [time.time()]
    brain = ScriptedBrain()
    with start_in_process(
        brains={brain.handle: brain}, retention_seconds=3600, clock=lambda: now[0]
    ) as srv:
        c = Letta(base_url=srv.base_url, max_retries=0)
        agent = c.agents.create(model=HANDLE)
        run_id = bg(c, agent.id, "echo old")[0].run_id
        now[0] += 3599
        assert list(c.runs.messages.stream(run_id))  # still inside the window
        now[0] += 2
        with pytest.raises(APIStatusError) as err:
            list(c.runs.messages.stream(run_id))
        assert err.value.status_code == 410
        assert err.value.body["detail"].startswith("EXPIRED")


def test_several_readers_get_identical_frames(
    client: Letta, agent_id: str, server, http: httpx.Client
) -> None:
    h = httpx.Client(base_url=server.base_url, timeout=30)
    with (
        h,
        h.stream(
            "POST",
            f"/v1/agents/{agent_id}/messages",
            json={
                "messages": [{"role": "user", "content": "long 30 20"}],
                "streaming": True,
                "background": True,
                "stream_tokens": True,
            },
        ) as resp,
    ):
        raw = resp.iter_raw()
        first = next(raw)
        run_id = frame_json(frames(first.decode())[0])[1]["run_id"]
        results: list[str] = []

        def reader() -> None:
            with httpx.Client(base_url=server.base_url, timeout=30) as h2:
                results.append(h2.post(f"/v1/runs/{run_id}/stream", json={}).text)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        body = first + b"".join(raw)
        for t in threads:
            t.join(30)
    assert len(results) == 3 and all(r == body.decode() for r in results)
    assert body.decode().endswith("data: [DONE]\n\n")


def test_headers_arrive_before_first_frame(client: Letta, agent_id: str, server) -> None:
    h = httpx.Client(base_url=server.base_url, timeout=30)
    with (
        h,
        h.stream(
            "POST",
            f"/v1/agents/{agent_id}/messages",
            json={
                "messages": [{"role": "user", "content": "silent 1.0"}],
                "streaming": True,
                "background": True,
                "include_pings": False,
            },
        ) as resp,
    ):
        t0 = time.monotonic()
        assert resp.status_code == 200
        chunk = next(resp.iter_raw())
        assert time.monotonic() - t0 > 0.5  # the first frame came much later than headers
        assert b"assistant_message" in chunk


def test_keepalive_pings_carry_last_seq() -> None:
    from tests.server.scripted_brain import ScriptedBrain

    brain = ScriptedBrain()
    with start_in_process(brains={brain.handle: brain}, keepalive_interval=0.2) as srv:
        c = Letta(base_url=srv.base_url, max_retries=0)
        agent = c.agents.create(model=HANDLE)
        got = bg(c, agent.id, "silent 0.7")
        pings = [x for x in got if x.message_type == "ping"]
        assert len(pings) >= 3 and pings[0].seq_id == 1
        assert all(p.seq_id == 1 for p in pings[1:])  # keepalives repeat the last seq
        replay = post_sse(
            httpx.Client(base_url=srv.base_url), f"/v1/runs/{got[0].run_id}/stream", {}
        )
        assert replay.count('"message_type":"ping"') == 1  # keepalives are not stored


def test_resent_otid_reattaches(client: Letta, agent_id: str) -> None:
    msg = [{"role": "user", "content": "echo once", "otid": "otid-abc-123"}]
    kw = {"streaming": True, "background": True, "stream_tokens": True}
    first = list(client.agents.messages.create(agent_id, messages=msg, **kw))
    again = list(client.agents.messages.create(agent_id, messages=msg, **kw))
    assert first[0].run_id == again[0].run_id
    assert [c.seq_id for c in again[:2]] == [1, 2]
    assert [c.message_type for c in again] == [c.message_type for c in first]
    runs = client.runs.list(agent_id=agent_id).items
    assert len([r for r in runs if r.id == first[0].run_id]) == 1 and len(runs) == 1


def test_fifty_concurrent_runs_do_not_block(client: Letta, server) -> None:
    """Behaviour, not speed: the 50 runs are in flight at the same time (their server-side
    running intervals overlap), which a server that ran them one after another could not do."""
    agents = [client.agents.create(model=HANDLE).id for _ in range(50)]
    slow = bg(client, agents[0], "silent 0.0")  # warm up
    assert slow[-2].stop_reason == "end_turn"
    run_ids: dict[int, str] = {}

    def one(i: int) -> None:
        c = Letta(base_url=server.base_url, max_retries=0, timeout=60)
        got = bg(c, agents[i], "long 10 100")  # 1 s of sleeping per run
        assert got[-2].stop_reason == "end_turn"
        run_ids[i] = got[0].run_id

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(run_ids) == 50
    events = []
    for run_id in run_ids.values():
        run = client.runs.retrieve(run_id)
        assert run.status == "completed" and run.completed_at is not None
        events += [
            (run.created_at.timestamp(), 1),
            (run.completed_at.replace(tzinfo=run.created_at.tzinfo).timestamp(), -1),
        ]
    in_flight = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak >= 25, f"at most {peak} of 50 runs were running at once"
