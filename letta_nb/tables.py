"""How run tables look in a notebook: narrow, readable, the data left untouched.

`runs_frame()` and `usage_frame()` return typed DataFrames (UTC datetimes, timedeltas,
categoricals, `Int64`). Shown in Jupyter, eleven full-width columns with 40-character ids and
`0 days 00:00:00.009353024` durations do not fit a page, so these frames *display* a compact
view: short run ids, seconds, milliseconds, the agent's name, no id or flag columns. Anything
computed from them (`df[...]`, `groupby`, `merge`) is a plain DataFrame again, and the full
values are always in the columns (`df.run_id`, `df.duration`).
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

#: Shown columns: (title, data column, formatter).
_SHORT_ID = 12  # "run-" + 8 hex digits: unique enough to tell runs apart on a page


def short_id(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value)
    if text.startswith("run-"):
        return text[:_SHORT_ID]
    if text.startswith("conv-"):
        return text[: _SHORT_ID + 1]  # "conv-" + 8 hex digits
    return text


def seconds(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{pd.Timedelta(value).total_seconds():.2f} s"


def millis(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{pd.Timedelta(value).total_seconds() * 1000:.0f} ms"


def moment(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def text(value: Any) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def count(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{int(value):,}"


COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("run", "run_id", short_id),
    ("agent", "agent", text),
    ("conversation", "conversation", short_id),
    ("status", "status", text),
    ("stop reason", "stop_reason", text),
    ("started (UTC)", "created_at", moment),
    ("duration", "duration", seconds),
    ("first token", "ttft", millis),
    ("tokens", "total_tokens", count),
    ("prompt", "prompt_tokens", count),
    ("completion", "completion_tokens", count),
)
_RIGHT = {"duration", "first token", "tokens", "prompt", "completion"}


#: Shown only when some row has a value (runs of the default history have none).
_OPTIONAL = {"conversation"}


CONVERSATION_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("conversation", "conversation_id", short_id),
    ("summary", "summary", text),
    ("agent", "agent", text),
    ("created (UTC)", "created_at", moment),
    ("last message (UTC)", "last_message_at", moment),
)


def display_table(
    frame: pd.DataFrame, columns: tuple[tuple[str, str, Any], ...] = COLUMNS
) -> pd.DataFrame:
    """The compact, all-text table a runs frame shows (only the columns it has)."""
    shown: dict[str, list[str]] = {}
    for title, column, fmt in columns:
        if column in frame.columns:
            values = [fmt(v) for v in frame[column].tolist()]
            if title not in _OPTIONAL or any(values):
                shown[title] = values
    return pd.DataFrame(shown, index=range(len(frame)))


def table_html(
    frame: pd.DataFrame,
    *,
    note: str | None = None,
    columns: tuple[tuple[str, str, Any], ...] = COLUMNS,
) -> str:
    table = display_table(frame, columns)
    head = "".join(
        f'<th style="text-align:{"right" if t in _RIGHT else "left"}">{html.escape(t)}</th>'
        for t in table.columns
    )
    rows = []
    for values in table.itertuples(index=False):
        cells = "".join(
            f'<td style="text-align:{"right" if t in _RIGHT else "left"};white-space:nowrap">'
            f"{html.escape(v)}</td>"
            for t, v in zip(table.columns, values, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    caption = note or (
        f"{len(frame)} run{'s' if len(frame) != 1 else ''}, newest first · the full values "
        "are in the columns (e.g. <code>.run_id</code>, <code>.duration</code>)"
    )
    return (
        '<div class="lnb-runs"><table class="dataframe">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<div style="color:var(--jp-ui-font-color2,#6b7280);font-size:90%">{caption}</div>'
        "</div>"
    )


class RunsFrame(pd.DataFrame):
    """A typed runs (or usage) table that *displays* compactly (see the module doc)."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame  # anything derived from it is a plain DataFrame

    def _repr_html_(self) -> str:
        return table_html(self)


class ConversationsFrame(pd.DataFrame):
    """A typed conversations table that displays compactly (short ids, local-free times)."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def _repr_html_(self) -> str:
        n = len(self)
        note = (
            f"{n} conversation{'s' if n != 1 else ''}, newest first · the full values are in "
            "the columns (e.g. <code>.conversation_id</code>)"
        )
        return table_html(self, note=note, columns=CONVERSATION_COLUMNS)


# ---- batch results (letta_nb.batch) ---------------------------------------------------------
#: The answer column shows this many characters (the full text stays in `.answer`).
ANSWER_CHARS = 80


def clipped(value: Any, chars: int = ANSWER_CHARS) -> str:
    shown = " ".join(text(value).split())
    return shown if len(shown) <= chars else shown[: chars - 1] + "…"


BATCH_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("status", "status", text),
    ("answer", "answer", clipped),
    ("tokens", "tokens", count),
    ("duration", "duration", seconds),
    ("run", "run_id", short_id),
    ("error", "error", lambda v: clipped(v, 60)),
)
_BATCH_RIGHT = {"tokens", "duration"}


def batch_display(frame: pd.DataFrame, rows: int | None = None) -> pd.DataFrame:
    """The compact, all-text table a batch frame shows: the index, status, a clipped answer."""
    part = frame if rows is None else frame.iloc[:rows]
    shown: dict[str, list[str]] = {"": [text(v) for v in part.index.tolist()]}
    for title, column, fmt in BATCH_COLUMNS:
        if column in part.columns:
            shown[title] = [fmt(v) for v in part[column].tolist()]
    return pd.DataFrame(shown, index=range(len(part)))


def batch_html(
    frame: pd.DataFrame, *, header: str | None = None, paused: str | None = None, rows: int = 200
) -> str:
    """A batch's results as escaped, self-contained HTML (the saved notebook's copy)."""
    table = batch_display(frame, rows)
    head = "".join(
        f'<th style="text-align:{"right" if t in _BATCH_RIGHT else "left"}">{html.escape(t)}</th>'
        for t in table.columns
    )
    body = []
    for values in table.itertuples(index=False):
        cells = "".join(
            f'<td style="text-align:{"right" if t in _BATCH_RIGHT else "left"}">'
            f"{html.escape(v)}</td>"
            for t, v in zip(table.columns, values, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    more = len(frame) - len(table)
    note = (
        f"… {more:,} more rows: the full results are in <code>batch.frame</code>"
        if more > 0
        else "the full answers are in <code>batch.frame.answer</code>"
    )
    top = (
        f'<div class="lnb-header" style="color:#6b7280;font-size:90%">{html.escape(header)}</div>'
        if header
        else ""
    )
    alert = f'<div style="color:#b45309">⚠ {html.escape(paused)}</div>' if paused else ""
    return (
        f'<div class="lnb-batch-static">{top}{alert}<table class="dataframe">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<div style="color:var(--jp-ui-font-color2,#6b7280);font-size:90%">{note}</div></div>'
    )


class BatchFrame(pd.DataFrame):
    """A batch's typed results that *display* compactly (clipped answers, seconds)."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def _repr_html_(self) -> str:
        return batch_html(self, rows=60)


# ---- the dashboard (letta_nb.widgets.dashboard) ---------------------------------------------
def dashboard_html(rows: list[dict[str, Any]], *, url: str) -> str:
    """The dashboard's rows as escaped static HTML (a saved notebook's copy)."""
    head = "".join(
        f"<th>{html.escape(t)}</th>"
        for t in ("", "agent", "what", "conversation", "status", "elapsed", "tokens", "last frame")
    )
    body = []
    for r in rows:
        idle = r.get("idle")
        last = (
            "" if idle is None else f"{idle:.0f} s ago" + (" · stalled" if r.get("stall") else "")
        )
        elapsed = r.get("el")
        cells = (
            r.get("k", ""),
            r.get("ag", ""),
            r.get("w", ""),
            r.get("cv") or "",
            r.get("st", ""),
            "" if elapsed is None else f"{elapsed:.1f} s",
            "" if r.get("tok") is None else f"{int(r['tok']):,}",
            last,
        )
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    note = (
        f"letta_nb dashboard · {html.escape(url)} · {len(rows)} row{'s' if len(rows) != 1 else ''}"
    )
    return (
        '<div class="lnb-dash-static"><table class="dataframe">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<div style="color:var(--jp-ui-font-color2,#6b7280);font-size:90%">{note}</div></div>'
    )
