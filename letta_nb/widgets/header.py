"""The run header as one HTML string: agent, run, status, elapsed, last seq, frames/s, warnings.

A pure function of the follower's attributes, so it is tested without widgets and the view only
re-sends it when the string changed.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

_STATUS_COLOR = {
    "starting": "#6b7280",
    "running": "#1d4ed8",
    "requires_approval": "#b45309",
    "completed": "#047857",
    "failed": "#b91c1c",
    "error": "#b91c1c",
    "cancelled": "#6b7280",
    "detached": "#6b7280",
}


def _seconds(value: Any) -> float | None:
    """Epoch seconds of a datetime or a number; None when unknown."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def elapsed(started_at: Any, ended_at: Any = None, *, now: float | None = None) -> float | None:
    """Seconds the chain has run; accepts datetimes, epoch or monotonic floats."""
    start = _seconds(started_at)
    if start is None:
        return None
    end = _seconds(ended_at)
    if end is None:
        if now is None:
            # A small number cannot be epoch time: the follower used time.monotonic().
            now = time.time() if start > 1e9 else time.monotonic()
        end = now
    return max(0.0, end - start)


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def header_html(follower: Any, agent: str | None = None, *, now: float | None = None) -> str:
    """The header block for a follower (duck-typed: missing attributes show as '–')."""
    status = str(getattr(follower, "status", None) or "starting")
    agent = agent or getattr(follower, "agent_id", None) or "–"
    runs = list(getattr(follower, "runs", None) or [])
    run_id = getattr(follower, "run_id", None) or (runs[-1] if runs else None)
    run_text = html.escape(str(run_id or "–"))
    if len(runs) > 1:
        run_text += f" <span style='color:#6b7280'>(run {len(runs)} of the chain)</span>"
    seconds = elapsed(
        getattr(follower, "started_at", None), getattr(follower, "ended_at", None), now=now
    )
    fps = getattr(follower, "frames_per_s", None)
    fps_text = f"{fps:.0f} frames/s" if isinstance(fps, int | float) else "– frames/s"
    color = _STATUS_COLOR.get(status, "#374151")
    parts = [
        f"<b>{html.escape(str(agent))}</b>",
        f"run {run_text}",
        f"<span class='lnb-status' style='color:{color};font-weight:600'>"
        f"{html.escape(status)}</span>",
        format_elapsed(seconds),
        f"seq {getattr(follower, 'last_seq', None) or 0}",
        fps_text,
    ]
    lines = [
        "<div class='lnb-header' style='font-family:monospace;font-size:90%;color:#374151'>"
        + " · ".join(parts)
        + "</div>"
    ]
    warning = getattr(follower, "warning", None)
    if warning:
        lines.append(
            "<div class='lnb-warning' style='color:#b45309;font-size:90%'>⚠ "
            f"{html.escape(str(warning))}</div>"
        )
    error = getattr(follower, "error", None)
    if error:
        lines.append(
            "<div class='lnb-error' style='color:#b91c1c;font-weight:600'>✖ "
            f"{html.escape(str(error))}</div>"
        )
    return "".join(lines)
