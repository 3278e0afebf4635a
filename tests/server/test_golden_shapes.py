"""Our wire shapes against the recorded Letta 0.16.8 server (``tests/fixtures/letta-golden``).

Each scenario runs the equivalent exchange on the embedded server (scripted test brain) and
compares shapes (see ``golden_shapes``): frame key order and value types, the message_type
pattern, seq numbering, terminal frames, error framing, headers and REST body keys. Where the
embedded server deliberately differs, the improvement is asserted instead (marked IMPROVEMENT).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from golden_shapes import (
    assert_same,
    golden_json,
    golden_sse,
    rest_shape,
    run_id_of,
    same_stream,
    split_sse,
)
from scripted_brain import HANDLE, ScriptedBrain

from letta_nb.server import EmbeddedServer, start_in_process

CANCEL_FRAME = 'data: {"message_type": "stop_reason", "stop_reason": "cancelled"}\n\n'
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def send(http: httpx.Client, agent: str, text: str, **kw: object) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": text}],
        "streaming": True,
        "background": True,
        "stream_tokens": True,
        "include_pings": True,
        **kw,
    }
    return http.post(f"/v1/agents/{agent}/messages", json=body)


def resume(http: httpx.Client, run_id: str, after: int = 0, **kw: object) -> httpx.Response:
    return http.post(f"/v1/runs/{run_id}/stream", json={"starting_after": after, **kw})


@pytest.fixture()
def agent(http: httpx.Client) -> str:
    return http.post("/v1/agents/", json={"name": "golden twin", "model": HANDLE}).json()["id"]


def pending_call_id(http: httpx.Client, agent: str) -> str:
    got = http.get(f"/v1/agents/{agent}", params={"include": "agent.pending_approval"}).json()
    return got["pending_approval"]["tool_calls"][0]["tool_call_id"]


def answer(http: httpx.Client, agent: str, approval: dict) -> httpx.Response:
    body = {
        "messages": [{"type": "approval", "approvals": [approval]}],
        "streaming": True,
        "background": True,
        "stream_tokens": True,
        "include_pings": True,
    }
    return http.post(f"/v1/agents/{agent}/messages", json=body)


# -- 02 / 03: short background runs --------------------------------------------------------
def test_02_stream_tokens_true(golden: Path, http: httpx.Client, agent: str) -> None:
    r = send(http, agent, "echo hello there")
    assert r.headers["content-type"] == SSE_CONTENT_TYPE
    same_stream(
        r.text,
        golden_sse(golden / "02_bg_stream_tokens_true", "01_post_messages_stream"),
        "02 stream_tokens=true",
    )
    dep = http.post(
        f"/v1/agents/{agent}/messages/stream",
        json={
            "messages": [{"role": "user", "content": "echo hello again"}],
            "stream_tokens": True,
            "background": True,
        },
    )
    same_stream(
        dep.text,
        golden_sse(
            golden / "02_bg_stream_tokens_true", "03_post_deprecated_messages_stream_endpoint"
        ),
        "02 deprecated /messages/stream",
    )
    run = http.get(f"/v1/runs/{run_id_of(r.text)}").json()
    recorded = golden_json(golden / "02_bg_stream_tokens_true", "02_retrieve_run")
    assert_same(rest_shape(run), rest_shape(recorded["response"]["json"]), "02 Run")


def test_03_stream_tokens_false(golden: Path, http: httpx.Client, agent: str) -> None:
    r = send(http, agent, "echo hello there, no token streaming", stream_tokens=False)
    recorded = golden_sse(golden / "03_bg_stream_tokens_false", "01_post_messages_stream")
    same_stream(r.text, recorded, "03 stream_tokens=false")
    assert r.text.count('"assistant_message"') == recorded.count('"assistant_message"') == 1


# -- 04 / 05: disconnect, resume, replay -----------------------------------------------------
def test_04_05_disconnect_resume_replay(
    golden: Path, server: EmbeddedServer, http: httpx.Client, agent: str
) -> None:
    g4, g5 = golden / "04_long_disconnect_resume", golden / "05_replay_finished_run"
    head = ""
    with (
        httpx.Client(base_url=server.base_url, timeout=30) as c,
        c.stream(
            "POST",
            f"/v1/agents/{agent}/messages",
            json={
                "messages": [{"role": "user", "content": "long 60 10"}],
                "streaming": True,
                "background": True,
                "stream_tokens": True,
            },
        ) as s,
    ):
        for chunk in s.iter_text():
            head += chunk
            if head.count("\n\n") >= 20:
                break
    head = "".join(f + "\n\n" for f in head.split("\n\n")[:20])
    same_stream(head, golden_sse(g4, "01_post_messages_stream_disconnect"), "04 before cut")
    run_id = run_id_of(head)
    active = http.get("/v1/runs/", params={"agent_id": agent, "active": "true"}).json()
    assert [x["id"] for x in active] == [run_id]
    assert_same(
        rest_shape(active),
        rest_shape(golden_json(g4, "02_list_active_runs_while_running")["response"]["json"]),
        "04 active runs",
    )
    tail = resume(http, run_id, 20).text
    same_stream(tail, golden_sse(g4, "05_resume_from_last_seq"), "04 resume after 20")
    replay = resume(http, run_id, 0, batch_size=1000).text
    same_stream(replay, golden_sse(g5, "01_replay_from_0_batch_1000"), "05 replay")
    assert head + tail == replay  # invariant 8: byte-identical
    assert resume(http, run_id, 0, include_pings=False).text == replay
    assert http.get("/v1/runs/", params={"agent_id": agent, "active": "true"}).json() == []


def test_resume_at_or_after_end_closes(http: httpx.Client, agent: str) -> None:
    """IMPROVEMENT: the recorded server never closes such a stream (pings only)."""
    r = send(http, agent, "echo a b")
    run_id, frames = run_id_of(r.text), len(split_sse(r.text))
    t0 = time.monotonic()
    assert resume(http, run_id, frames + 5).text == ""
    assert time.monotonic() - t0 < 10  # it closed (the recorded server would hang forever)


# -- 06: approvals ----------------------------------------------------------------------------
def test_06_approval_approve_deny_client_return(
    golden: Path, http: httpx.Client, agent: str
) -> None:
    g = golden / "06_approval"
    req = send(http, agent, "approve")
    same_stream(req.text, golden_sse(g, "01_approval_request_1"), "06 approval request")
    run = http.get(f"/v1/runs/{run_id_of(req.text)}").json()
    assert (run["status"], run["stop_reason"]) == ("completed", "requires_approval")
    assert http.get("/v1/runs/", params={"agent_id": agent, "active": "true"}).json() == []
    ours = http.get(f"/v1/agents/{agent}", params={"include": "agent.pending_approval"}).json()
    recorded = golden_json(g, "04_retrieve_agent_pending_approval")["response"]["json"]
    assert_same(
        rest_shape(ours["pending_approval"]),
        rest_shape(recorded["pending_approval"]),
        "06 pending_approval",
    )
    approved = answer(
        http,
        agent,
        {"type": "approval", "approve": True, "tool_call_id": pending_call_id(http, agent)},
    )
    same_stream(approved.text, golden_sse(g, "05_approve"), "06 approve")
    msgs = http.get(f"/v1/runs/{run_id_of(approved.text)}/messages").json()
    rec = golden_json(g, "07_run_messages_of_approve_run")["response"]["json"]
    assert [m["message_type"] for m in msgs] == [m["message_type"] for m in rec]

    send(http, agent, "approve")
    denied = answer(
        http,
        agent,
        {
            "type": "approval",
            "approve": False,
            "reason": "not today",
            "tool_call_id": pending_call_id(http, agent),
        },
    )
    same_stream(denied.text, golden_sse(g, "09_deny_with_reason"), "06 deny")
    msgs = http.get(f"/v1/runs/{run_id_of(denied.text)}/messages").json()
    rec = golden_json(g, "10_run_messages_of_deny_run")["response"]["json"]
    assert [m["message_type"] for m in msgs] == [m["message_type"] for m in rec]
    assert_same(rest_shape(msgs[0]), rest_shape(rec[0]), "06 approval_response_message")

    send(http, agent, "approve")
    client_ret = answer(
        http,
        agent,
        {
            "type": "tool",
            "tool_return": "client ran it",
            "status": "success",
            "tool_call_id": pending_call_id(http, agent),
        },
    )
    same_stream(client_ret.text, golden_sse(g, "12_client_tool_return"), "06 client return")
    msgs = http.get(f"/v1/runs/{run_id_of(client_ret.text)}/messages").json()
    rec = golden_json(g, "13_run_messages_of_client_return_run")["response"]["json"]
    assert [m["message_type"] for m in msgs] == [m["message_type"] for m in rec]


def test_double_approval_is_an_error(http: httpx.Client, agent: str) -> None:
    """IMPROVEMENT: answering an approval twice is an error, not a second tool run."""
    send(http, agent, "approve")
    call = {"type": "approval", "approve": True, "tool_call_id": pending_call_id(http, agent)}
    assert answer(http, agent, call).status_code == 200
    again = http.post(
        f"/v1/agents/{agent}/messages",
        json={"messages": [{"type": "approval", "approvals": [call]}]},
    )
    assert again.status_code == 400 and isinstance(again.json()["detail"], str)


# -- 07: a message while an approval is pending -------------------------------------------------
def test_07_message_while_pending(golden: Path, http: httpx.Client, agent: str) -> None:
    g = golden / "07_message_while_pending"
    send(http, agent, "approve")
    r = http.post(
        f"/v1/agents/{agent}/messages",
        json={"messages": [{"role": "user", "content": "hello while pending"}]},
    )
    rec = golden_json(g, "02_plain_message_non_streaming_409")["response"]
    assert r.status_code == rec["status"] == 409
    assert_same(rest_shape(r.json()), rest_shape(rec["json"]), "07 409 body")
    assert_same(rest_shape(r.json()["detail"]), rest_shape(rec["json"]["detail"]), "07 detail")
    failed = send(http, agent, "hello while pending")
    same_stream(
        failed.text, golden_sse(g, "03_plain_message_background_stream_error"), "07 error frames"
    )
    run = http.get(f"/v1/runs/{run_id_of(failed.text)}").json()
    rec_run = golden_json(g, "04_retrieve_failed_run")["response"]["json"]
    assert (run["status"], run["stop_reason"]) == (rec_run["status"], rec_run["stop_reason"])
    assert_same(
        rest_shape(run["metadata"]["error"]),
        rest_shape(rec_run["metadata"]["error"]),
        "07 metadata.error",
    )
    assert run["metadata"]["error"]["seq_id"] is None
    same_stream(
        resume(http, run["id"]).text,
        golden_sse(g, "05_replay_failed_run_from_0"),
        "07 replay of the failed run",
    )
    resolved = answer(
        http,
        agent,
        {
            "type": "tool",
            "tool_return": "resolved by client",
            "status": "success",
            "tool_call_id": pending_call_id(http, agent),
        },
    )
    same_stream(resolved.text, golden_sse(g, "06_resolve_pending_with_client_return"), "07 resolve")


# -- 08: cancel ---------------------------------------------------------------------------------
def test_08_cancel(golden: Path, server: EmbeddedServer, http: httpx.Client, agent: str) -> None:
    g = golden / "08_cancel"
    bodies: dict[str, str] = {}
    started = threading.Event()

    def reader1() -> None:
        with (
            httpx.Client(base_url=server.base_url, timeout=60) as c,
            c.stream(
                "POST",
                f"/v1/agents/{agent}/messages",
                json={
                    "messages": [{"role": "user", "content": "long 2000 20"}],
                    "streaming": True,
                    "background": True,
                    "stream_tokens": True,
                },
            ) as s,
        ):
            text = ""
            for chunk in s.iter_text():
                text += chunk
                if text.count("\n\n") >= 10:
                    started.set()
            bodies["reader1"] = text

    t = threading.Thread(target=reader1)
    t.start()
    assert started.wait(30)
    run_id = http.get("/v1/runs/", params={"agent_id": agent, "active": "true"}).json()[0]["id"]
    cancel = http.post(f"/v1/agents/{agent}/messages/cancel", json={"run_ids": [run_id]})
    rec = golden_json(g, "03_cancel")["response"]["json"]
    assert cancel.json() == {run_id: "cancelled"} and list(rec.values()) == ["cancelled"]
    t.join(30)
    ours = bodies["reader1"]
    same_stream(ours, golden_sse(g, "01_post_long_stream_reader1"), "08 reader 1")
    assert ours.endswith(CANCEL_FRAME + "data: [DONE]\n\n")  # the one non-compact frame
    assert golden_sse(g, "01_post_long_stream_reader1").endswith(CANCEL_FRAME + "data: [DONE]\n\n")
    replay = resume(http, run_id).text
    assert replay == ours  # IMPROVEMENT: every reader gets the stored stream, [DONE] included
    same_stream(replay, golden_sse(g, "05_replay_from_0_after_cancel"), "08 replay")
    run = http.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["stop_reason"]) == ("cancelled", "cancelled")
    again = http.post(f"/v1/agents/{agent}/messages/cancel", json={"run_ids": [run_id]})
    assert again.json() == {run_id: "cancelled"}


# -- 09 / 10: failure and a multi-step tool run ------------------------------------------------
def test_09_llm_failure(golden: Path, http: httpx.Client, agent: str) -> None:
    g = golden / "09_llm_failure"
    r = send(http, agent, "fail500")
    same_stream(r.text, golden_sse(g, "01_post_fail500"), "09 live")
    same_stream(
        resume(http, run_id_of(r.text)).text, golden_sse(g, "04_replay_from_0"), "09 replay"
    )
    run = http.get(f"/v1/runs/{run_id_of(r.text)}").json()
    rec = golden_json(g, "03_retrieve_run_failed")["response"]["json"]
    assert (run["status"], run["stop_reason"]) == (rec["status"], rec["stop_reason"])
    assert_same(rest_shape(run), rest_shape(rec), "09 failed Run")


def test_10_multistep_tool_and_12_run_resources(
    golden: Path, http: httpx.Client, agent: str
) -> None:
    r = send(http, agent, "tool")
    same_stream(r.text, golden_sse(golden / "10_multistep_tool", "01_post_memory"), "10 multistep")
    run_id = run_id_of(r.text)
    g = golden / "12_run_resources"
    for name, path in (
        ("01_run_messages", "messages"),
        ("02_run_usage", "usage"),
        ("03_run_steps", "steps"),
    ):
        ours = http.get(f"/v1/runs/{run_id}/{path}").json()
        rec = golden_json(g, name)["response"]["json"]
        assert_same(rest_shape(ours), rest_shape(rec), f"12 run {path}")
        if isinstance(ours, list):
            assert len(ours) == len(rec)
            if path == "messages":
                for mine, theirs in zip(ours, rec, strict=True):
                    assert_same(rest_shape(mine), rest_shape(theirs), f"12 {mine['message_type']}")
    runs = http.get("/v1/runs/", params={"agent_id": agent}).json()
    assert_same(
        rest_shape(runs),
        rest_shape(golden_json(g, "04_list_runs_for_agent")["response"]["json"]),
        "12 list runs",
    )


# -- 11: errors -------------------------------------------------------------------------------
def test_11_errors(golden: Path, http: httpx.Client, agent: str) -> None:
    g = golden / "11_errors"

    def same_error(resp: httpx.Response, name: str) -> None:
        rec = golden_json(g, name)["response"]
        assert resp.status_code == rec["status"], (name, resp.text)
        assert_same(rest_shape(resp.json()), rest_shape(rec["json"]), name)

    unknown = "run-00000000-0000-4000-8000-000000001234"
    same_error(resume(http, unknown), "01_resume_unknown_run_404")
    same_error(resume(http, "run-123"), "02_resume_malformed_run_id_400")
    fg = send(http, agent, "echo hello in the foreground", background=False)
    same_stream(fg.text, golden_sse(g, "03_foreground_stream"), "11 foreground stream")
    same_error(resume(http, run_id_of(fg.text)), "04_resume_non_background_run_400")
    same_error(http.get(f"/v1/runs/{unknown}/stream"), "05_get_on_resume_path_405")
    plain = http.post(
        f"/v1/agents/{agent}/messages", json={"messages": [{"role": "user", "content": "echo hi"}]}
    )
    rec = golden_json(g, "06_non_streaming_send")["response"]["json"]
    assert_same(rest_shape(plain.json()), rest_shape(rec), "11 LettaResponse")
    assert_same(rest_shape(plain.json()["usage"]), rest_shape(rec["usage"]), "11 usage")
    assert_same(
        rest_shape(plain.json()["messages"]),
        rest_shape(rec["messages"]),
        "11 LettaResponse messages",
    )
    same_error(
        http.post(
            f"/v1/agents/{agent}/messages",
            json={"messages": [{"role": "user", "content": "x"}], "background": True},
        ),
        "08_background_without_streaming_422",
    )


# -- 13: keepalive pings ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_ping_server() -> Iterator[EmbeddedServer]:
    brain = ScriptedBrain()
    with start_in_process(brains={brain.handle: brain}, keepalive_interval=0.3) as srv:
        yield srv


def test_13_keepalive_ping(golden: Path, quick_ping_server: EmbeddedServer) -> None:
    g = golden / "13_keepalive_ping"
    with httpx.Client(base_url=quick_ping_server.base_url, timeout=30) as http:
        agent = http.post("/v1/agents/", json={"model": HANDLE}).json()["id"]
        bodies: dict[str, str] = {}

        def tip_reader(run_id: str) -> None:
            with httpx.Client(base_url=quick_ping_server.base_url, timeout=30) as c:
                t0 = time.monotonic()
                with c.stream("POST", f"/v1/runs/{run_id}/stream", json={"starting_after": 2}) as s:
                    bodies["headers_after"] = f"{time.monotonic() - t0:.3f}"
                    bodies["ctype"] = s.headers["content-type"]
                    bodies["tip"] = "".join(s.iter_text())

        live = ""
        threads = []
        with http.stream(
            "POST",
            f"/v1/agents/{agent}/messages",
            json={
                "messages": [{"role": "user", "content": "slowend 1.2"}],
                "streaming": True,
                "background": True,
                "stream_tokens": True,
            },
        ) as s:
            assert s.headers["content-type"] == SSE_CONTENT_TYPE
            for chunk in s.iter_text():
                live += chunk
                if not threads and live.count("\n\n") >= 2:
                    threads.append(threading.Thread(target=tip_reader, args=(run_id_of(live),)))
                    threads[0].start()
        for t in threads:
            t.join(30)
    same_stream(live, golden_sse(g, "01_post_slow_stream"), "13 keepalive on the POST stream")
    pings = [f for _, f in split_sse(live) if '"message_type":"ping"' in f]
    assert '"seq_id":2' in pings[1]  # the keepalive repeats the last delivered seq
    same_stream(
        bodies["tip"], golden_sse(g, "02_resume_at_tip_while_silent"), "13 resume at the tip"
    )
    assert bodies["ctype"] == SSE_CONTENT_TYPE
    # IMPROVEMENT: headers go out at once, not with the first keepalive (20 s when recorded)
    assert float(bodies["headers_after"]) < 0.3 * 3


# -- 01: AgentState -------------------------------------------------------------------------------
def test_01_agent_state_keys(golden: Path, http: httpx.Client, agent: str) -> None:
    """Every AgentState key the recorded server sends, in its order; the SDK's required fields
    are a subset. Deliberate difference: no model/compaction settings objects (null)."""
    ours = http.get(f"/v1/agents/{agent}").json()
    rec = golden_json(golden / "01_agent_create", "04_sdk_retrieve_agent")["response"]["json"]
    unsupported = {"model_settings", "compaction_settings"}
    assert ours["model_settings"] is None and ours["compaction_settings"] is None
    assert_same(
        [s for s in rest_shape(ours) if s.split(":")[0] not in unsupported],
        [s for s in rest_shape(rec) if s.split(":")[0] not in unsupported],
        "AgentState",
    )
    assert [k for k in ours] == [k for k in rec]


# -- otid derivation and date formats -----------------------------------------------------------
DATE_FORMATS = {  # field -> the recorded format (digits as 9)
    "date": "9999-99-99T99:99:99+99:99",
    "created_at": "9999-99-99T99:99:99.999999Z",
    "updated_at": "9999-99-99T99:99:99.999999Z",
    "completed_at": "9999-99-99T99:99:99.999999",
}


def date_formats(text: str) -> set[tuple[str, str]]:
    import re

    return {
        (k, re.sub(r"\d", "9", v))
        for k, v in re.findall(r'"(date|created_at|updated_at|completed_at)": ?"([^"]+)"', text)
    }


def test_otid_derivation_and_dates_match_recordings(
    golden: Path, http: httpx.Client, agent: str
) -> None:
    import json

    from letta_nb.server.ids import derive_otid

    checked = 0
    for path in golden.glob("*/*.sse"):
        for _, data in split_sse(path.read_text()):
            if not data.startswith("{"):
                continue
            frame = json.loads(data)
            mid, otid = frame.get("id"), frame.get("otid")
            if mid and otid and mid.startswith("message-") and otid != mid:
                assert derive_otid(mid) == otid, (path.name, mid, otid)
                checked += 1
    assert checked > 1000
    recorded = set()
    for path in [*golden.glob("*/*.json"), *golden.glob("*/*.sse")]:
        recorded |= {f for f in date_formats(path.read_text()) if f[0] in DATE_FORMATS}
    assert set(DATE_FORMATS.items()) <= recorded  # (plus HTTP Date headers)
    assert {f for f in recorded if "GMT" not in f[1]} == set(DATE_FORMATS.items())
    body = send(http, agent, "tool").text
    run = http.get(f"/v1/runs/{run_id_of(body)}").text
    msgs = http.get(f"/v1/runs/{run_id_of(body)}/messages").text
    me = http.get(f"/v1/agents/{agent}").text
    assert date_formats(body + run + msgs + me) == set(DATE_FORMATS.items())
    for _, data in split_sse(body):
        frame = json.loads(data) if data.startswith("{") else {}
        if frame.get("message_type") in (
            "assistant_message",
            "tool_call_message",
            "tool_return_message",
        ):
            assert frame["otid"] == derive_otid(frame["id"])
        if frame.get("message_type") == "approval_request_message":
            assert frame["otid"] == frame["id"]
