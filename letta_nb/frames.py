"""Run history as pandas DataFrames with real dtypes, straight from the session's backend.

Typed, not stringly: UTC datetimes (the server's `completed_at` has no timezone and is UTC),
`timedelta64` durations, categorical status / stop_reason / message_type and nullable `Int64`
counters, so `df.groupby("status")` or `df.duration.mean()` just work. Empty results keep the
typed columns. Runs and usage frames *display* compactly (`tables.py`): short ids, seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .core.chunks import SeqTracker
from .core.errors import LettaNbError, StreamInterrupted
from .protocol import FINAL_RUN_STATUSES, MessageType, RunStatus, StopReason, content_text
from .tables import RunsFrame

RUN_STATUSES = tuple(s.value for s in RunStatus)
STOP_REASONS = tuple(s.value for s in StopReason)
MESSAGE_TYPES = tuple(t.value for t in MessageType)
#: How long `chunks_frame` listens to a run that is still live and followed by nobody here.
LIVE_READ_TIMEOUT = 2.0
LIVE_READ_LIMIT = 10.0

RUN_COLUMNS = [
    "run_id",
    "agent",
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


def _session() -> Any:
    from .session import current

    return current()


def _agent_id(session: Any, agent: str | None) -> str | None:
    return None if agent is None else session.resolve(agent)["id"]


def _names(session: Any, agent_ids: Iterable[str | None]) -> list[str | None]:
    """Agent names for every row: the session's cache, else one listing from the server (an
    agent this kernel never resolved still gets its name, not NaN)."""
    ids = list(agent_ids)
    namer = getattr(session, "agent_name", None)
    names: dict[str, str | None] = {a: namer(a) if namer else None for a in set(ids) if a}
    if any(v is None for v in names.values()) and hasattr(session, "agents"):
        try:
            listed = {row.get("id"): row.get("name") for row in session.agents()}
        except LettaNbError:
            listed = {}
        names = {a: v or listed.get(a) for a, v in names.items()}
    return [names.get(a) if a else None for a in ids]


# ---- runs ------------------------------------------------------------------------------------
def _runs_table(rows: list[Mapping[str, Any]], names: list[str | None]) -> pd.DataFrame:
    def col(key: str) -> list[Any]:
        return [r.get(key) for r in rows]

    frame = pd.DataFrame(
        {
            "run_id": _strings(col("id")),
            "agent": _strings(names),
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


def runs_frame(
    agent: str | None = None, active: bool | None = None, limit: int = 100
) -> pd.DataFrame:
    """Recent runs (newest first), optionally of one agent (name or id) or only active ones."""
    session = _session()
    rows = session.runs(agent_id=_agent_id(session, agent), active=active, limit=limit)
    return RunsFrame(_runs_table(rows, _names(session, [r.get("agent_id") for r in rows])))


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


def chunk_rows(
    backend: Any, run_id: str, end: int | None, timeout: float | None, batch_size: int | None = None
) -> list[dict[str, Any]]:
    """Stored frames of one run with their effective seq; stops at `end` when given."""
    rows: list[dict[str, Any]] = []
    deadline = None if timeout is None else time.monotonic() + LIVE_READ_LIMIT
    tracker = SeqTracker(run_id)
    kw: dict[str, Any] = {"include_pings": False}
    if timeout is not None:
        kw["timeout"] = timeout
    if batch_size is not None:
        kw["batch_size"] = batch_size
    stream = backend.resume(run_id, 0, **kw)
    try:
        for chunk in stream:
            acc = tracker.accept(chunk)
            if acc is None:
                continue
            data = acc.data
            rows.append(
                {
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
            )
            if end is not None and tracker.last_seq >= end:
                break  # never read past what is known: a live run's stream would wait
            if deadline is not None and time.monotonic() > deadline:
                break
    except StreamInterrupted:
        if timeout is None:
            raise  # a finished run's stream broke: say so instead of returning a part
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    return rows


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


def chunks_frame(run_id: str, batch_size: int | None = None) -> pd.DataFrame:
    """Every stored frame of a run, replayed from the server (seq-less frames get their seq).

    A run this kernel follows is read up to its cursor; a live run followed by nobody here is
    read until `LIVE_READ_TIMEOUT` seconds of silence or `LIVE_READ_LIMIT` seconds in all; a
    finished run is read to its end. `batch_size` is passed to the server's resume (frames
    per page of the stored replay).
    """
    session = _session()
    backend = session.backend
    follower = session.follower_for(run_id) if hasattr(session, "follower_for") else None
    end: int | None = None
    timeout: float | None = None
    if follower is not None:
        end = follower.transcript.last_seq(run_id) or None
    if end is None:
        status = backend.get_run(run_id).get("status")
        if status not in FINAL_RUN_STATUSES:
            timeout = LIVE_READ_TIMEOUT
    return chunks_table(chunk_rows(backend, run_id, end, timeout, batch_size))


# ---- usage -----------------------------------------------------------------------------------
def usage_frame(
    run_ids: Iterable[str] | None = None, agent: str | None = None, limit: int = 100
) -> pd.DataFrame:
    """Token usage per run: the given runs, else the `limit` newest (of `agent`)."""
    session = _session()
    backend = session.backend
    if run_ids is None:
        runs = session.runs(agent_id=_agent_id(session, agent), limit=limit)
    else:
        runs = [backend.get_run(rid) for rid in run_ids]
    usages: list[Mapping[str, Any]] = []
    for run in runs:
        try:
            usages.append(backend.run_usage(run["id"]))
        except LettaNbError:
            usages.append({})  # a run without usage yet (still starting): a row of <NA>
    base = _runs_table(runs, _names(session, [r.get("agent_id") for r in runs]))
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        base[key] = _ints([u.get(key) for u in usages])
    return RunsFrame(base[USAGE_COLUMNS])


# ---- agents ----------------------------------------------------------------------------------
def agents_frame() -> pd.DataFrame:
    """The server's agents: name, id, model, creation time (UTC)."""
    rows = _session().agents()
    frame = pd.DataFrame(
        {
            "name": _strings([r.get("name") for r in rows]),
            "id": _strings([r.get("id") for r in rows]),
            "model": _strings([r.get("model") for r in rows]),
            "created_at": _utc([r.get("created_at") for r in rows]),
        }
    )
    return frame[AGENT_COLUMNS]
