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
