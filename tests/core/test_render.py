"""core.render: readable items (tool fields, JSON returns, approval outcomes) and static HTML."""

from __future__ import annotations

import json

from letta_nb.core.chunks import Chunk
from letta_nb.core.render import (
    approval_outcomes,
    denial_reason,
    entry_item,
    format_seconds,
    header_text,
    items,
    pretty_json,
    render_html,
    tool_fields,
)
from letta_nb.core.transcript import Transcript

REPORT_ARGS = json.dumps(
    {
        "title": "Coffee sales summary",
        "body": "Source: x\n\n| region | revenue (sum) |\n|---|---:|\n| East | $1 |",
        "notes": "line one\nline two",
        "limit": 3,
        "tags": ["a", "b"],
    }
)


def fold(*frames: dict) -> Transcript:
    """Frames folded in order; each run's seqs count from 1, as on the wire."""
    tr = Transcript()
    seqs: dict[str, int] = {}
    for frame in frames:
        rid = frame.get("run_id", "run-1")
        seq = seqs[rid] = seqs.get(rid, 0) + 1
        tr.apply(Chunk(frame["message_type"], {**frame, "seq_id": seq}, rid, seq), rid)
    return tr


def test_tool_arguments_become_labelled_fields() -> None:
    fields = tool_fields(REPORT_ARGS)
    assert fields is not None
    by_name = {name: (kind, value) for name, kind, value in fields}
    assert [f[0] for f in fields] == ["title", "body", "notes", "limit", "tags"]
    assert by_name["title"] == ("text", "Coffee sales summary")
    assert by_name["body"][0] == "md" and "\n| East | $1 |" in by_name["body"][1]  # real newlines
    assert by_name["notes"] == ("block", "line one\nline two")
    assert by_name["limit"] == ("text", "3")
    assert by_name["tags"] == ("json", '[\n  "a",\n  "b"\n]')
    assert tool_fields('{"title": "Co') is None  # still streaming
    assert tool_fields("") == []


def test_returns_are_indented_json() -> None:
    assert pretty_json('{"a": {"b": 1}}') == '{\n  "a": {\n    "b": 1\n  }\n}'
    assert pretty_json("plain text") == "plain text"
    assert pretty_json("42") == "42"


def test_approval_outcomes_from_the_transcript() -> None:
    tr = fold(
        {"message_type": "approval_request_message", "id": "a1",
         "tool_call": {"name": "write_report", "arguments": "{}", "tool_call_id": "c1"}},
        {"message_type": "approval_request_message", "id": "a2",
         "tool_call": {"name": "write_report", "arguments": "{}", "tool_call_id": "c2"}},
        {"message_type": "tool_return_message", "id": "t1", "tool_call_id": "c1", "run_id": "run-2",
         "name": "write_report", "status": "success", "tool_return": "{}"},
        {"message_type": "tool_return_message", "id": "t2", "tool_call_id": "c2", "run_id": "run-3",
         "name": "write_report", "status": "error",
         "tool_return": "Error: request to call tool denied. User reason: not reviewed"},
    )  # fmt: skip
    assert approval_outcomes(tr.entries) == {"c1": (True, None), "c2": (False, "not reviewed")}
    assert denial_reason("Error: request to call tool denied. User reason: None") == ""
    assert denial_reason("all good") is None
    shown = items(tr.entries)
    assert shown[0]["o"] == {"ok": True, "why": None}
    assert shown[1]["o"] == {"ok": False, "why": "not reviewed"}


def test_items_hide_noise_and_keep_what_a_person_reads() -> None:
    tr = fold(
        {"message_type": "assistant_message", "id": "m1", "content": "x" * 50},
        {"message_type": "stop_reason", "stop_reason": "end_turn"},
        {"message_type": "usage_statistics", "total_tokens": 9},
        {"message_type": "stop_reason", "stop_reason": "cancelled", "run_id": "run-2"},
    )
    out = [entry_item(e, tail=10) for e in tr.entries]
    assert out[0] == {"k": "as", "x": "x" * 10, "c": 40}
    assert out[1] == {"k": ""} and out[2] == {"k": ""}
    assert out[3] == {"k": "sr", "x": "cancelled"}


def test_static_html_is_escaped_and_readable() -> None:
    tr = fold(
        {"message_type": "assistant_message", "id": "m1",
         "content": "**Best:** East <script>alert(1)</script> [x](javascript:alert(1))"},
        {"message_type": "approval_request_message", "id": "a1",
         "tool_call": {"name": "write_report", "arguments": REPORT_ARGS, "tool_call_id": "c1"}},
        {"message_type": "tool_return_message", "id": "t1", "tool_call_id": "c9",
         "name": "group_stats", "status": "success", "tool_return": '{"rows": 3}'},
    )  # fmt: skip
    out = render_html(tr, header=header_text("demo-analyst", "completed", 4.25, 1234))
    assert "demo-analyst · completed · 4.2 s · 1,234 tokens" in out
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<strong>Best:</strong>" in out and 'href="javascript' not in out
    assert "approval requested: write_report" in out
    assert '<td style="text-align:right">$1</td>' in out  # the report body, rendered
    assert "\\n" not in out  # no literal escapes
    assert "&quot;rows&quot;: 3" in out and "<details>" in out


def test_format_seconds() -> None:
    assert format_seconds(4.25) == "4.2 s"
    assert format_seconds(0.03) == "< 0.1 s" and format_seconds(0.0) == "< 0.1 s"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(187) == "3:07"
    assert format_seconds(None) == "–"
    assert header_text(None, "running") == "letta · running"
