"""Transcript → text and HTML. Pure functions shared by every front end.

The text form is deterministic (no ids, no times) so `--wait` cells and nbval compare stably.
The HTML form is what the widget and `_repr_html_` show; `tail` limits the characters of each
long message so a live view never re-sends a whole book.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable

from ..protocol import MessageType as MT
from .transcript import Entry, Transcript


def _args_text(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, sort_keys=True)
    except (ValueError, TypeError):
        return raw


def entry_text(entry: Entry) -> str | None:
    kind = entry.kind
    text = str(entry.text)
    if kind == MT.ASSISTANT:
        return text
    if kind in (MT.REASONING, MT.HIDDEN_REASONING):
        return f"(thinking) {text}"
    if kind == MT.TOOL_CALL:
        return f"→ {entry.name}({_args_text(text)})"
    if kind == MT.TOOL_RETURN:
        return f"← {entry.name} [{entry.status}]: {text}"
    if kind == MT.APPROVAL_REQUEST:
        return f"? approval requested: {entry.name}({_args_text(text)})"
    if kind == MT.STOP_REASON:
        return f"■ {text}"
    if kind == MT.USAGE:
        extra = entry.extra
        return (
            f"  usage: {extra.get('total_tokens')} tokens "
            f"({extra.get('prompt_tokens')} prompt, {extra.get('completion_tokens')} "
            f"completion), {extra.get('step_count')} step(s)"
        )
    if kind == MT.ERROR:
        return f"✖ error: {text}"
    if kind == MT.USER:
        return f"> {text}"
    return f"[{kind}] {text}" if text else None


def render_text(transcript: Transcript, *, usage: bool = True) -> str:
    """Deterministic plain-text transcript of a whole chain."""
    lines: list[str] = []
    for entry in transcript.entries:
        if entry.kind == MT.USAGE and not usage:
            continue
        line = entry_text(entry)
        if line is not None:
            lines.append(line)
    return "\n".join(lines)


_STYLE: dict[str, str] = {
    MT.REASONING: "color:#6b7280;font-style:italic",
    MT.HIDDEN_REASONING: "color:#9ca3af;font-style:italic",
    MT.ASSISTANT: "color:inherit",
    MT.TOOL_CALL: "font-family:monospace;color:#1d4ed8",
    MT.TOOL_RETURN: "font-family:monospace;color:#047857",
    MT.APPROVAL_REQUEST: "font-family:monospace;color:#b45309;font-weight:600",
    MT.STOP_REASON: "color:#6b7280;font-size:90%",
    MT.USAGE: "color:#6b7280;font-size:90%",
    MT.ERROR: "color:#b91c1c;font-weight:600",
}


def entry_html(entry: Entry, tail: int | None = None) -> str:
    """One message as an HTML block; only the last `tail` characters of long text."""
    kind = entry.kind
    size = len(entry.text)
    text = entry.text.tail(tail) if tail is not None and size > tail else str(entry.text)
    cut = size - len(text)
    prefix = (
        (
            f'<span style="color:#9ca3af">… {cut:,} earlier characters (full text in '
            f"<code>.transcript</code>)</span><br>"
        )
        if cut
        else ""
    )
    body = html.escape(text)
    style = _STYLE.get(kind, "")
    if kind == MT.REASONING or kind == MT.HIDDEN_REASONING:
        inner = f"<details open><summary>thinking</summary>{prefix}{body}</details>"
    elif kind == MT.TOOL_CALL:
        inner = f"→ <b>{html.escape(str(entry.name))}</b>({prefix}{body})"
    elif kind == MT.TOOL_RETURN:
        status = html.escape(str(entry.status))
        inner = f"← <b>{html.escape(str(entry.name))}</b> [{status}]: {prefix}{body}"
    elif kind == MT.APPROVAL_REQUEST:
        inner = (
            f"approval requested: <b>{html.escape(str(entry.name))}</b>({prefix}{body})"
            f" <span style='color:#6b7280'>[{html.escape(str(entry.tool_call_id))}]</span>"
        )
    elif kind in (MT.STOP_REASON, MT.USAGE, MT.ERROR):
        inner = html.escape(entry_text(entry) or "")
    else:
        inner = prefix + body
    return (
        f'<div class="lnb-{kind.replace("_", "-")}" '
        f'style="white-space:pre-wrap;margin:2px 0;{style}">{inner}</div>'
    )


def render_html(transcript: Transcript | Iterable[Entry], *, tail: int | None = None) -> str:
    """A transcript (or some of its entries) as HTML blocks."""
    entries = transcript.entries if isinstance(transcript, Transcript) else transcript
    return "".join(entry_html(e, tail) for e in entries)
