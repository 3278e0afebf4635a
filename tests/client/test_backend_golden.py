"""Backend against the exact golden bytes: every stream parses, errors map to one line."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from lnb_golden import read_frames, sse_files, to_chunks

from letta_nb.backend import Backend
from letta_nb.core.errors import (
    ConfigurationError,
    ConversationBusy,
    Expired,
    LettaNbError,
    NotFound,
    PendingApproval,
    ServerUnavailable,
    StreamInterrupted,
    Unauthorized,
)

KEY = "sk-letta-test-SECRET-0123456789"


def _set(value):
    """JSON without null members (the SDK fills absent keys with None)."""
    if isinstance(value, dict):
        return {k: _set(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set(v) for v in value]
    if isinstance(value, datetime):  # the backend leaves `date` as the SDK's datetime
        return value.isoformat()
    return value


def _backend(handler) -> Backend:
    return Backend(
        "http://fake",
        KEY,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def _serving(body: bytes, seen: list[httpx.Request] | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return handler


def _read_all(stream) -> tuple[list, Exception | None]:
    got = []
    try:
        for chunk in stream:
            got.append(chunk)
    except StreamInterrupted as exc:
        return got, exc
    return got, None


def test_every_recorded_stream_parses_like_the_wire(golden_dir: Path) -> None:
    """Every recording parses frame for frame; one the server did not finish (no `[DONE]`,
    no error event: the client closed it) ends in StreamInterrupted, never a quiet end."""
    for path in sse_files(golden_dir):
        frames = read_frames(path)
        expected = to_chunks(frames)
        got, broke = _read_all(_backend(_serving(path.read_bytes())).resume("run-x", 0))
        finished = any(f.done or f.event == "error" for f in frames)
        assert (broke is None) == finished, (path, broke)
        assert [c.message_type for c in got] == [c.message_type for c in expected], path
        assert [c.seq_id for c in got] == [c.seq_id for c in expected], path
        assert [c.run_id for c in got] == [c.run_id for c in expected], path
        for g, e in zip(got, expected, strict=True):  # same JSON, field for field
            assert _set(g.data) == _set(e.data), path


def test_error_frame_becomes_the_final_error_chunk(golden_dir: Path) -> None:
    body = (golden_dir / "09_llm_failure/01_post_fail500.sse").read_bytes()
    chunks = list(_backend(_serving(body)).resume("run-x", 0))
    assert [c.message_type for c in chunks] == ["ping", "stop_reason", "error_message"]
    err = chunks[-1]
    assert err.seq_id == 3 and err.data["error_type"] == "llm_error"
    assert err.run_id == chunks[0].run_id


def test_crash_error_body_is_tolerated() -> None:
    body = b'event: error\ndata: {"error": "boom", "code": "INTERNAL_SERVER_ERROR"}\n\n'
    (chunk,) = list(_backend(_serving(body)).resume("run-9", 0))
    assert chunk.message_type == "error_message" and chunk.data["message"] == "boom"
    assert chunk.run_id == "run-9"


def test_send_is_background_with_pings_otid_and_no_retry() -> None:
    seen: list[httpx.Request] = []
    b = _backend(_serving(b"data: [DONE]\n\n", seen))
    list(b.start("agent-1", [{"role": "user", "content": "hi"}], otid="otid-1"))
    list(
        b.approve(
            "agent-1", [{"type": "approval", "tool_call_id": "c1", "approve": True}], otid="otid-2"
        )
    )
    first, second = (json.loads(r.content) for r in seen)
    assert first["background"] is True and first["streaming"] is True
    assert first["include_pings"] is True and first["stream_tokens"] is True
    assert first["messages"] == [{"role": "user", "content": "hi", "otid": "otid-1"}]
    assert second["messages"][0]["type"] == "approval"
    assert second["messages"][0]["approvals"][0]["tool_call_id"] == "c1"
    assert all(r.headers.get("x-stainless-retry-count") == "0" for r in seen)
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_resume_sends_the_cursor_in_the_json_body() -> None:
    seen: list[httpx.Request] = []
    list(_backend(_serving(b"data: [DONE]\n\n", seen)).resume("run-7", 41, batch_size=50))
    assert seen[0].url.path == "/v1/runs/run-7/stream"
    assert json.loads(seen[0].content) == {
        "starting_after": 41,
        "include_pings": True,
        "batch_size": 50,
    }


def _status(code: int, body: dict) -> Backend:
    return _backend(lambda request: httpx.Response(code, json=body))


@pytest.mark.parametrize(
    ("code", "body", "cls", "words"),
    [
        (404, {"detail": f"Run not found with id='run-1' actor {KEY}"}, NotFound, "run run-1"),
        (401, {"detail": f"bad key {KEY}"}, Unauthorized, "refused the API key"),
        (403, {"detail": "forbidden"}, Unauthorized, "HTTP 403"),
        (
            409,
            {
                "detail": {
                    "code": "PENDING_APPROVAL",
                    "message": "CONFLICT: waiting",
                    "pending_request_id": "message-1",
                }
            },
            PendingApproval,
            "approval",
        ),
        (410, {"detail": "EXPIRED: Run was created more than 3 hours ago"}, Expired, "retention"),
        (
            400,
            {"detail": f"INVALID_ARGUMENT: Invalid run ID format {KEY}"},
            ConfigurationError,
            "HTTP 400",
        ),
        (422, {"detail": [{"msg": "field required"}]}, ConfigurationError, "field required"),
    ],
)
def test_http_errors_map_to_one_redacted_line(code, body, cls, words) -> None:
    with pytest.raises(cls) as info:
        list(_status(code, body).resume("run-1", 0))
    err = info.value
    text = str(err)
    assert words in text and "\n" not in text
    assert KEY not in text and KEY not in repr(err) and KEY not in str(err.args)
    assert err.__cause__ is None and err.__suppress_context__


def test_pending_approval_on_send_is_one_line(golden_dir: Path) -> None:
    rec = json.loads(
        (
            golden_dir / "07_message_while_pending/02_plain_message_non_streaming_409.json"
        ).read_text()
    )
    b = _status(409, rec["response"]["json"])
    with pytest.raises(PendingApproval, match="waiting for an approval"):
        list(b.start("agent-1", [{"role": "user", "content": "hi"}], otid="o"))


def test_unknown_agent_says_which() -> None:
    b = _status(404, {"detail": "Agent not found"})
    with pytest.raises(NotFound, match="agent 'agent-zzz'"):
        b.resolve_agent("agent-zzz")


def test_connection_refused_is_server_unavailable() -> None:
    b = Backend("http://127.0.0.1:9", KEY, max_retries=0)
    with pytest.raises(
        ServerUnavailable, match=re.escape("cannot reach the Letta server at http://127.0.0.1:9")
    ):
        list(b.start("agent-1", [{"role": "user", "content": "hi"}], otid="o"))
    with pytest.raises(ServerUnavailable):
        b.get_run("run-1")


def test_key_never_shows() -> None:
    b = _backend(_serving(b""))
    assert KEY not in repr(b) and "api_key=***" in repr(b)
    assert isinstance(NotFound("x"), LettaNbError)


def test_read_errors_mid_stream_are_stream_interrupted(golden_dir: Path) -> None:
    from fake_letta import CutStream

    from letta_nb.core.errors import StreamInterrupted

    body = (golden_dir / "02_bg_stream_tokens_true/01_post_messages_stream.sse").read_bytes()
    for err in (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
        b = _backend(
            lambda r, e=err: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=CutStream(body, 700, e)
            )
        )
        got = []
        with pytest.raises(StreamInterrupted):
            for chunk in b.resume("run-1", 0):
                got.append(chunk)
        assert got and got[0].message_type == "ping"


# ---- conversations ------------------------------------------------------------------------------
def test_conversation_busy_409_carries_the_holders_run(golden_dir: Path) -> None:
    rec = json.loads(
        (
            golden_dir / "17_conversation_otid_lock/04_post_different_otid_B_while_running_409.json"
        ).read_text()
    )
    b = _status(409, rec["response"]["json"])
    with pytest.raises(ConversationBusy) as info:
        list(b.start("agent-1", [{"role": "user", "content": "hi"}], otid="o", conversation_id="c"))
    assert info.value.run_id == rec["response"]["json"]["run_id"]
    assert f"busy with run {info.value.run_id}" in str(info.value)


def test_conversation_pending_approval_string_409_is_pending_approval(golden_dir: Path) -> None:
    rec = json.loads(
        (
            golden_dir / "19_conversation_approval/06_plain_message_non_streaming_409.json"
        ).read_text()
    )
    assert isinstance(rec["response"]["json"]["detail"], str)  # Letta's conversation shape
    b = _status(409, rec["response"]["json"])
    with pytest.raises(PendingApproval, match="waiting for an approval"):
        list(b.start("agent-1", [{"role": "user", "content": "hi"}], otid="o", conversation_id="c"))


def test_conversation_send_and_resume_by_otid_requests() -> None:
    seen: list[httpx.Request] = []
    b = _backend(_serving(b"data: [DONE]\n\n", seen))
    list(
        b.start(
            "agent-1", [{"role": "user", "content": "hi"}], otid="o-1", conversation_id="conv-1"
        )
    )
    list(b.resume_conversation("conv-1", otid="o-1", starting_after=3))
    list(b.approve("agent-1", [{"type": "approval", "tool_call_id": "c"}], otid="o-2",
                   conversation_id="conv-1"))  # fmt: skip
    send, resume, answer = seen
    assert send.url.path == "/v1/conversations/conv-1/messages"
    body = json.loads(send.content)
    assert body["streaming"] is True and body["background"] is True
    assert body["messages"] == [{"role": "user", "content": "hi", "otid": "o-1"}]
    assert resume.url.path == "/v1/conversations/conv-1/stream"
    assert json.loads(resume.content) == {"starting_after": 3, "include_pings": True, "otid": "o-1"}
    assert answer.url.path == "/v1/conversations/conv-1/messages"
    assert all(r.headers.get("x-stainless-retry-count") == "0" for r in seen)
