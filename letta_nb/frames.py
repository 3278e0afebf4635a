"""Run history as pandas DataFrames with real dtypes, built from rows passed in.

Typed, not stringly: UTC datetimes (the server's `completed_at` has no timezone and is UTC),
`timedelta64` durations, categorical status / stop_reason / message_type and nullable `Int64`
counters, so `df.groupby("status")` or `df.duration.mean()` just work. Empty results keep the
typed columns. This module only builds tables: the session fetches the rows (`Session.runs_frame`
and friends, `lnb.runs_frame`), so it imports nothing above the core.
Runs and usage frames *display* compactly (`tables.py`): short ids, seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .core.chunks import Chunk
from .protocol import MessageType, RunStatus, StopReason, content_text
from .tables import ConversationsFrame, RunsFrame

RUN_STATUSES = tuple(s.value for s in RunStatus)
STOP_REASONS = tuple(s.value for s in StopReason)
MESSAGE_TYPES = tuple(t.value for t in MessageType)

RUN_COLUMNS = [
    "run_id",
    "agent",
    "conversation",
    "status",
    "stop_reason",
    "created_at",
    "completed_at",
    "duration",
    "ttft",
    "background",
    "run_type",
    "agent_id",
]
CHUNK_COLUMNS = [
    "run_id",
    "seq_id",
    "message_type",
    "id",
    "step_id",
    "date",
    "name",
    "text",
    "data",
]
USAGE_COLUMNS = [
    "run_id",
    "agent",
    "status",
    "created_at",
    "completed_at",
    "duration",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "agent_id",
]
AGENT_COLUMNS = ["name", "id", "model", "created_at"]
CONVERSATION_COLUMNS = [
    "conversation_id",
    "summary",
    "agent",
    "created_at",
    "updated_at",
    "last_message_at",
    "agent_id",
]


# ---- typing helpers --------------------------------------------------------------------------
def _utc(values: Iterable[Any]) -> pd.Series:
    """ISO strings (with or without offset; naive means UTC) → datetime64[…, UTC]."""
    series = pd.Series(list(values), dtype=object)
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


def _category(values: Iterable[Any], known: Iterable[str]) -> pd.Categorical:
    items = [None if v is None else str(v) for v in values]
    cats = list(dict.fromkeys([*known, *(v for v in items if v is not None)]))
    return pd.Categorical(items, categories=cats)


def _ints(values: Iterable[Any]) -> pd.Series:
    return pd.Series([None if v is None else int(v) for v in values], dtype="Int64")


def _nanos(values: Iterable[Any]) -> pd.Series:
    return pd.to_timedelta(_ints(values).astype("float64"), unit="ns")


def _strings(values: Iterable[Any]) -> pd.Series:
    return pd.Series([None if v is None else str(v) for v in values], dtype="str")


# ---- runs ------------------------------------------------------------------------------------
def runs_table(rows: Sequence[Mapping[str, Any]], names: list[str | None]) -> pd.DataFrame:
    """One row per run (`Backend.list_runs` / `get_run` dicts); `names`: their agents'."""

    def col(key: str) -> list[Any]:
        return [r.get(key) for r in rows]

    frame = pd.DataFrame(
        {
            "run_id": _strings(col("id")),
            "agent": _strings(names),
            "conversation": _strings(col("conversation_id")),
            "status": _category(col("status"), RUN_STATUSES),
            "stop_reason": _category(col("stop_reason"), STOP_REASONS),
            "created_at": _utc(col("created_at")),
            "completed_at": _utc(col("completed_at")),
            "duration": _nanos(col("total_duration_ns")),
            "ttft": _nanos(col("ttft_ns")),
            "background": pd.Series(col("background"), dtype="boolean"),
            "run_type": _strings([(r.get("metadata") or {}).get("run_type") for r in rows]),
            "agent_id": _strings(col("agent_id")),
        }
    )
    return frame[RUN_COLUMNS]


# ---- chunks ----------------------------------------------------------------------------------
def _frame_text(data: Mapping[str, Any]) -> str | None:
    for key in (
        "content",
        "reasoning",
        "hidden_reasoning",
        "tool_return",
        "stop_reason",
        "message",
    ):
        value = data.get(key)
        if isinstance(value, str | list):  # a string, or content parts
            return content_text(value)
    call = data.get("tool_call")
    if isinstance(call, Mapping):
        return call.get("arguments")
    return None


def _frame_name(data: Mapping[str, Any]) -> str | None:
    call = data.get("tool_call")
    if isinstance(call, Mapping) and call.get("name"):
        return str(call["name"])
    name = data.get("name")
    return str(name) if name else None


def chunk_row(run_id: str, acc: Chunk) -> dict[str, Any]:
    """The table row of one accepted frame (its effective seq included)."""
    data = acc.data
    return {
        "run_id": run_id,
        "seq_id": acc.seq_id,
        "message_type": acc.message_type,
        "id": data.get("id"),
        "step_id": data.get("step_id"),
        "date": data.get("date"),
        "name": _frame_name(data),
        "text": _frame_text(data),
        "data": dict(data),
    }


def chunks_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    def col(key: str) -> list[Any]:
        return [r.get(key) for r in rows]

    frame = pd.DataFrame(
        {
            "run_id": _strings(col("run_id")),
            "seq_id": _ints(col("seq_id")),
            "message_type": _category(col("message_type"), MESSAGE_TYPES),
            "id": _strings(col("id")),
            "step_id": _strings(col("step_id")),
            "date": _utc(col("date")),
            "name": _strings(col("name")),
            "text": _strings(col("text")),
            "data": pd.Series(col("data"), dtype=object),
        }
    )
    return frame[CHUNK_COLUMNS]


# ---- usage -----------------------------------------------------------------------------------
def usage_table(
    runs: Sequence[Mapping[str, Any]],
    usages: Sequence[Mapping[str, Any]],
    names: list[str | None],
) -> pd.DataFrame:
    """Token usage per run: `runs` with their `usages` (an empty dict: a row of <NA>)."""
    base = runs_table(runs, names)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        base[key] = _ints([u.get(key) for u in usages])
    return RunsFrame(base[USAGE_COLUMNS])


# ---- agents ----------------------------------------------------------------------------------
def agents_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The server's agents: name, id, model, creation time (UTC)."""
    frame = pd.DataFrame(
        {
            "name": _strings([r.get("name") for r in rows]),
            "id": _strings([r.get("id") for r in rows]),
            "model": _strings([r.get("model") for r in rows]),
            "created_at": _utc([r.get("created_at") for r in rows]),
        }
    )
    return frame[AGENT_COLUMNS]


# ---- conversations ---------------------------------------------------------------------------
def conversations_table(rows: Sequence[Mapping[str, Any]], names: list[str | None]) -> pd.DataFrame:
    """One row per conversation (`Backend.list_conversations` rows); `names`: their agents'."""

    def col(key: str) -> list[Any]:
        return [r.get(key) for r in rows]

    frame = pd.DataFrame(
        {
            "conversation_id": _strings(col("id")),
            "summary": _strings(col("summary")),
            "agent": _strings(names),
            "created_at": _utc(col("created_at")),
            "updated_at": _utc(col("updated_at")),
            "last_message_at": _utc(col("last_message_at")),
            "agent_id": _strings(col("agent_id")),
        }
    )
    return ConversationsFrame(frame[CONVERSATION_COLUMNS])
