"""tables: runs and usage frames display narrow and readable; their data stays typed."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

import letta_nb as lnb
from letta_nb import frames
from letta_nb.tables import RunsFrame, display_table, table_html


def test_runs_display_fits_a_page(session: Any) -> None:
    session.send("/long 6", new=True, wait=True, timeout=20)
    frame = lnb.runs_frame(limit=1)
    assert isinstance(frame, RunsFrame) and list(frame.columns) == frames.RUN_COLUMNS
    assert pd.api.types.is_timedelta64_dtype(frame["duration"])  # the data is untouched
    shown = display_table(frame)  # a run of the agent's own history: no conversation column
    assert list(shown.columns) == [
        "run", "agent", "status", "stop reason", "started (UTC)", "duration", "first token",
    ]  # fmt: skip
    first = shown.iloc[0]
    assert re.fullmatch(r"run-[0-9a-f]{8}", first["run"]) and frame.run_id.iloc[0].startswith(
        first["run"]
    )
    assert re.fullmatch(r"\d+\.\d\d s", first["duration"]), first["duration"]
    assert re.fullmatch(r"\d+ ms", first["first token"]), first["first token"]
    assert first["agent"] == "demo-analyst" and first["status"] == "completed"
    html = frame._repr_html_()
    assert "0 days" not in html and "agent_id" not in html and frame.run_id.iloc[0] not in html
    assert "newest first" in table_html(frame)
    # anything derived from it is a plain DataFrame with the plain display
    assert type(frame[["run_id", "status"]]) is pd.DataFrame
    assert type(frame.head(2)) is pd.DataFrame


def test_every_run_names_its_agent(session: Any) -> None:
    other = session.backend.create_agent("tables-elsewhere")  # never resolved by this session
    assert session.agent_name(other["id"]) is None
    from letta_nb.backend import new_otid

    stream = session.backend.start(
        other["id"], [{"role": "user", "content": "/long 2"}], otid=new_otid()
    )
    for _chunk in stream:
        pass
    stream.close()
    frame = lnb.runs_frame(limit=20)
    names = dict(zip(frame.agent_id, frame.agent, strict=True))
    assert names[other["id"]] == "tables-elsewhere"
    assert not frame.agent.isna().any()


def test_usage_display_has_tokens(session: Any) -> None:
    session.send("/long 3", new=True, wait=True, timeout=20)
    usage = lnb.usage_frame(limit=2)
    shown = display_table(usage)
    assert {"tokens", "prompt", "completion"} <= set(shown.columns)
    assert "completed_at" not in shown.columns and len(shown.columns) <= 9
    assert pd.api.types.is_integer_dtype(usage["total_tokens"])


def test_runs_in_conversations_show_theirs(session: Any) -> None:
    h = session.send("/long 2", conversation="new", new=True, wait=True, timeout=20)
    frame = lnb.runs_frame(limit=1)
    assert frame.conversation.iloc[0] == h.conversation_id
    shown = display_table(frame)
    assert list(shown.columns)[:3] == ["run", "agent", "conversation"]
    assert shown.iloc[0]["conversation"] == h.conversation_id[:13]
    convs = lnb.conversations_frame()
    assert convs.conversation_id.iloc[0] == h.conversation_id
    assert pd.api.types.is_datetime64_any_dtype(convs["created_at"])
    html = convs._repr_html_()
    assert h.conversation_id[:13] in html and h.conversation_id not in html
