"""runs_frame / chunks_frame / usage_frame: typed columns, also when empty."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import letta_nb as lnb
from letta_nb import frames


def is_utc(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dtype.tz) == "UTC"


def check_run_columns(frame: pd.DataFrame) -> None:
    assert is_utc(frame["created_at"]) and is_utc(frame["completed_at"])
    assert pd.api.types.is_timedelta64_dtype(frame["duration"])
    if "ttft" in frame:
        assert pd.api.types.is_timedelta64_dtype(frame["ttft"])
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert "completed" in frame["status"].cat.categories
    if "stop_reason" in frame:
        assert isinstance(frame["stop_reason"].dtype, pd.CategoricalDtype)
        assert "end_turn" in frame["stop_reason"].cat.categories


@pytest.fixture()
def finished(session: Any) -> Any:
    handle = session.send("/long 6", new=True, wait=True, timeout=20)
    assert handle.status == "completed"
    return handle


def test_runs_frame_typed(session: Any, finished: Any) -> None:
    frame = lnb.runs_frame(agent="demo-analyst", limit=5)
    assert list(frame.columns) == frames.RUN_COLUMNS
    check_run_columns(frame)
    row = frame.set_index("run_id").loc[finished.run_id]
    assert row["status"] == "completed" and row["stop_reason"] == "end_turn"
    assert row["agent"] == "demo-analyst"
    assert row["completed_at"] >= row["created_at"]  # naive completed_at was read as UTC
    assert row["duration"] > pd.Timedelta(0)
    assert lnb.runs_frame(active=True, limit=5)["status"].isin(["created", "running"]).all()


def test_empty_frames_keep_typed_columns(session: Any) -> None:
    session.backend.create_agent("idle-agent", model="letta_nb/demo")
    frame = lnb.runs_frame(agent="idle-agent")
    assert frame.empty and list(frame.columns) == frames.RUN_COLUMNS
    check_run_columns(frame)
    usage = lnb.usage_frame(agent="idle-agent")
    assert usage.empty and list(usage.columns) == frames.USAGE_COLUMNS
    assert str(usage["total_tokens"].dtype) == "Int64"
    chunks = frames.chunks_table([])
    assert list(chunks.columns) == frames.CHUNK_COLUMNS
    assert str(chunks["seq_id"].dtype) == "Int64" and is_utc(chunks["date"])
    assert isinstance(chunks["message_type"].dtype, pd.CategoricalDtype)


def test_chunks_frame_every_frame_once_with_seq(session: Any, finished: Any) -> None:
    frame = lnb.chunks_frame(finished.run_id)
    assert list(frame.columns) == frames.CHUNK_COLUMNS
    assert list(frame["seq_id"]) == list(range(1, len(frame) + 1))  # seq-less frames included
    assert str(frame["seq_id"].dtype) == "Int64"
    kinds = list(frame["message_type"].astype(str))
    assert kinds == ["ping"] + ["assistant_message"] * 6 + ["stop_reason", "usage_statistics"]
    assert (
        "".join(frame.loc[frame.message_type == "assistant_message", "text"])
        == "token1 token2 token3 token4 token5 token6"
    )
    assert is_utc(frame["date"])


def test_chunks_frame_of_a_live_run_is_bounded(session: Any) -> None:
    handle = session.send("/long 100000 20", new=True)
    try:
        frame = lnb.chunks_frame(handle.run_id or _wait_run(handle))
        assert len(frame) >= 1
        assert frame["seq_id"].is_monotonic_increasing
    finally:
        handle.cancel()
        handle.wait(10)


def _wait_run(handle: Any) -> str:
    import time

    deadline = time.monotonic() + 10
    while handle.run_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handle.run_id is not None
    return handle.run_id


def test_usage_frame(session: Any, finished: Any) -> None:
    frame = lnb.usage_frame(run_ids=[finished.run_id])
    assert list(frame.columns) == frames.USAGE_COLUMNS
    row = frame.iloc[0]
    assert row["completion_tokens"] == 6 and row["total_tokens"] == row["prompt_tokens"] + 6
    for col in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert str(frame[col].dtype) == "Int64"
    check_run_columns(frame)
    many = lnb.usage_frame(agent="demo-analyst", limit=3)
    assert len(many) <= 3 and many["total_tokens"].notna().all()


def test_public_names_use_the_current_session(session: Any) -> None:
    """`lnb.*_frame` fetch through the current session; frames.py only builds tables."""
    assert list(lnb.agents_frame().columns) == frames.AGENT_COLUMNS
    for name in ("runs_frame", "chunks_frame", "usage_frame", "agents_frame"):
        assert not hasattr(frames, name) and callable(getattr(lnb, name))
