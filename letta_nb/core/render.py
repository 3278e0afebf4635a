"""Transcript → text, view items and static HTML. Pure functions shared by every front end.

The text form is deterministic (no ids, no times) so `--wait` cells and nbval compare stably.
*Items* are what a person reads of each message (the live view's vocabulary: `entry_item`):
Markdown answers, tool calls as labelled argument fields, indented JSON returns, the approval
outcome where the request was. `render_html` turns items into the escaped static HTML that
saved notebooks and nbconvert show; `tail` keeps only the last characters of a long message.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol import MessageType as MT
from ..protocol import StopReason
from .markdown import looks_like_markdown, markdown_html
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


# ---- readable values -------------------------------------------------------------------------
#: A field value longer than this (characters) or lines is shown collapsed ("show all").
LONG_FIELD_CHARS = 600
LONG_FIELD_LINES = 12

Item = dict[str, Any]


def pretty_json(text: str) -> str:
    """JSON text indented for reading (non-JSON text is returned as it is)."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return text
    if not isinstance(value, dict | list):
        return text
    return json.dumps(value, indent=2, ensure_ascii=False)


def field_kind(value: str) -> str:
    """How a string argument reads best: `text` (one line), `block` (lines) or `md`."""
    if "\n" not in value:
        return "text"
    return "md" if looks_like_markdown(value) else "block"


def tool_fields(arguments: str) -> list[list[str]] | None:
    """A tool call's JSON arguments as labelled fields `[name, kind, value]`, in their order.

    kinds: `text` (one line), `block` (a multi-line string, shown as it is), `md` (a multi-line
    string that reads as Markdown: rendered), `json` (a number, list, object…: indented JSON).
    None while the arguments are not (yet) a complete JSON object.
    """
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, TypeError):
        return None
    if not isinstance(value, dict):
        return None
    fields: list[list[str]] = []
    for name, arg in value.items():
        if isinstance(arg, str):
            fields.append([str(name), field_kind(arg), arg])
        elif isinstance(arg, dict | list):
            fields.append([str(name), "json", json.dumps(arg, indent=2, ensure_ascii=False)])
        else:
            fields.append([str(name), "text", json.dumps(arg, ensure_ascii=False)])
    return fields


def is_long(value: str) -> bool:
    return len(value) > LONG_FIELD_CHARS or value.count("\n") >= LONG_FIELD_LINES


def format_seconds(seconds: float | None) -> str:
    """`< 0.1 s`, `4.2 s`, `3:07`, `1:02:03`; an en dash when unknown (as the views'
    `fmtSeconds`)."""
    if seconds is None:
        return "–"
    if 0 <= seconds < 0.1:
        return "< 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())


# ---- approvals -------------------------------------------------------------------------------
DENIAL_MARKER = "User reason:"


def denial_reason(tool_return: str) -> str | None:
    """The reason from a denial's tool return ("" if none was given), None if not a denial."""
    if "denied" not in tool_return.lower():
        return None
    _, marker, reason = tool_return.partition(DENIAL_MARKER)
    reason = reason.strip()
    return "" if not marker or reason in ("None", "null") else reason


def approval_outcomes(entries: Iterable[Entry]) -> dict[str, tuple[bool, str | None]]:
    """tool_call_id → (approved, reason) for every request the transcript shows answered.

    An answered request is followed (in the answer's new run) by the tool's return for the same
    tool_call_id: a denial's return says so (with the user's reason), anything else ran.
    """
    asked: set[str] = set()
    out: dict[str, tuple[bool, str | None]] = {}
    for entry in entries:
        cid = entry.tool_call_id
        if not cid:
            continue
        if entry.kind == MT.APPROVAL_REQUEST:
            asked.add(cid)
        elif entry.kind == MT.TOOL_RETURN and cid in asked and cid not in out:
            reason = denial_reason(str(entry.text))
            out[cid] = (True, None) if reason is None else (False, reason or None)
    return out


# ---- items -----------------------------------------------------------------------------------
#: Item kinds (`k`): the live view and the static HTML render these.
KIND_CODES: dict[str, str] = {
    MT.ASSISTANT: "as",
    MT.REASONING: "re",
    MT.HIDDEN_REASONING: "hr",
    MT.TOOL_CALL: "tc",
    MT.TOOL_RETURN: "tr",
    MT.APPROVAL_REQUEST: "ap",
    MT.STOP_REASON: "sr",
    MT.ERROR: "er",
    MT.USER: "us",
}
#: Kinds whose text streams in many deltas: the live view appends to them.
STREAMED = frozenset({MT.ASSISTANT, MT.REASONING, MT.HIDDEN_REASONING, MT.USER})
#: Stop reasons a person does not need to read (the answer or the approval card says it).
QUIET_STOPS = frozenset({StopReason.END_TURN, StopReason.REQUIRES_APPROVAL})


def tail_text(entry: Entry, tail: int | None) -> tuple[str, int]:
    """(the last `tail` characters of the entry's text, how many earlier ones were cut)."""
    size = len(entry.text)
    if tail is not None and size > tail:
        text = entry.text.tail(tail)
        return text, size - len(text)
    text = entry.text.tail(size + 1) if size else ""
    return text, 0


def entry_item(entry: Entry, tail: int | None = None) -> Item:
    """What a person reads of one message (`{"k": ""}` for messages not shown)."""
    kind = entry.kind
    if kind == MT.USAGE or (kind == MT.STOP_REASON and str(entry.text) in QUIET_STOPS):
        return {"k": ""}
    code = KIND_CODES.get(kind, "ot")
    item: Item = {"k": code}
    if kind in (MT.TOOL_CALL, MT.APPROVAL_REQUEST):
        raw, _ = tail_text(entry, None)
        item["nm"] = entry.name or "tool"
        item["id"] = entry.tool_call_id
        fields = tool_fields(raw)
        if fields is None:
            item["x"] = raw[-tail:] if tail is not None and len(raw) > tail else raw
        else:
            item["f"] = fields
        return item
    text, cut = tail_text(entry, tail)
    if kind == MT.TOOL_RETURN:
        item["nm"] = entry.name or "tool"
        item["st"] = entry.status or ""
        text = pretty_json(text) if not cut else text
    elif kind == MT.ERROR:
        text = one_line(text)
    elif code == "ot":
        item["nm"] = kind
    item["x"] = text
    if cut:
        item["c"] = cut
    return item


def items(
    entries: Iterable[Entry],
    tail: int | None = None,
    outcomes: Mapping[str, tuple[bool, str | None]] | None = None,
) -> list[Item]:
    """`entry_item` of each entry, with answered approval requests marked (`o`); `outcomes`
    (tool_call_id → (approved, reason)) adds answers known from elsewhere (the approval)."""
    entries = list(entries)
    known = {**approval_outcomes(entries), **(outcomes or {})}
    out = []
    for entry in entries:
        item = entry_item(entry, tail)
        if item["k"] == "ap" and entry.tool_call_id in known:
            ok, why = known[entry.tool_call_id]
            item["o"] = {"ok": ok, "why": why}
        out.append(item)
    return out


# ---- static HTML -----------------------------------------------------------------------------
_E = html.escape


def _text_block(value: str, kind: str) -> str:
    if kind == "md":
        return f'<div class="lnb-md">{markdown_html(value)}</div>'
    if kind == "json" or kind == "block":
        return f'<pre class="lnb-pre">{_E(value)}</pre>'
    return f"<code>{_E(value)}</code>"


def _fields_html(fields: list[list[str]]) -> str:
    rows = []
    for name, kind, value in fields:
        rows.append(
            f'<div class="lnb-field"><span class="lnb-label" style="color:#6b7280">{_E(name)}'
            f"</span> {_text_block(value, kind)}</div>"
        )
    return "".join(rows)


def outcome_line(outcome: Mapping[str, Any], name: str) -> str:
    """`✓ approved · write_report` / `✗ denied · write_report — the reason` (as the live view)."""
    if outcome.get("ok"):
        return f"✓ approved · {name}"
    why = outcome.get("why")
    return f"✗ denied · {name} — {why}" if why else f"✗ denied · {name}"


def item_html(item: Item) -> str:
    """One item as escaped, self-contained HTML (inline styles: no stylesheet needed)."""
    k = item.get("k")
    if not k:
        return ""
    cut = item.get("c")
    note = (
        f'<div style="color:#9ca3af">… {cut:,} earlier characters (full text in '
        f"<code>.transcript</code>)</div>"
        if cut
        else ""
    )
    x = str(item.get("x", ""))
    name = _E(str(item.get("nm", "")))
    if k == "as":
        body = note + markdown_html(x)
    elif k in ("re", "hr"):
        body = (
            '<details><summary style="color:#6b7280">thinking</summary>'
            f'<div style="color:#6b7280;font-style:italic;white-space:pre-wrap">{note}{_E(x)}'
            "</div></details>"
        )
    elif k in ("tc", "ap"):
        fields = item.get("f")
        args = _fields_html(fields) if fields is not None else f'<pre class="lnb-pre">{_E(x)}</pre>'
        outcome = item.get("o")
        if k == "tc":
            body = f"<div>→ <b>{name}</b></div>{args}"
        elif outcome is not None:  # answered: one line, the arguments folded under it
            body = f"<details><summary>{_E(outcome_line(outcome, str(item.get('nm'))))}</summary>"
            body += f"{args}</details>"
        else:
            head = f'<span style="color:#b45309;font-weight:600">approval requested: {name}</span>'
            body = f"<div>{head}</div>{args}"
    elif k == "tr":
        status = _E(str(item.get("st") or ""))
        body = (
            f"<details><summary>← <b>{name}</b> {status}</summary>{note}"
            f'<pre class="lnb-pre">{_E(x)}</pre></details>'
        )
    elif k == "sr":
        body = f'<span style="color:#6b7280">■ {_E(x)}</span>'
    elif k == "er":
        body = f'<span style="color:#b91c1c;font-weight:600">✖ {_E(x)}</span>'
    elif k == "us":
        body = f'<div style="color:#6b7280">&gt; {_E(x)}</div>'
    else:
        body = f'<span style="color:#6b7280">[{name}]</span> {_E(x)}'
    return f'<div class="lnb-item lnb-{k}" style="margin:4px 0">{body}</div>'


def header_text(
    agent: str | None,
    status: str,
    active: float | None = None,
    tokens: int | None = None,
    *,
    conversation: str | None = None,
) -> str:
    """`agent · conversation · status · 4.2 s · 1,234 tokens` (unknown parts left out)."""
    parts = [agent or "letta", *([conversation] if conversation else []), status]
    if active is not None and active >= 0.05:  # the live view leaves out a blink, too
        parts.append(format_seconds(active))
    if tokens is not None:
        parts.append(f"{tokens:,} tokens")
    return " · ".join(parts)


def render_html(
    transcript: Transcript | Iterable[Entry],
    *,
    tail: int | None = None,
    header: str | None = None,
    error: str | None = None,
    outcomes: Mapping[str, tuple[bool, str | None]] | None = None,
) -> str:
    """A transcript (or some of its entries) as static, escaped HTML; `header` on top."""
    entries = transcript.entries if isinstance(transcript, Transcript) else transcript
    parts = [item_html(item) for item in items(entries, tail, outcomes)]
    top = (
        f'<div class="lnb-header" style="color:#6b7280;font-size:90%">{_E(header)}</div>'
        if header
        else ""
    )
    err = (
        f'<div style="color:#b91c1c;font-weight:600">✖ {_E(one_line(error))}</div>' if error else ""
    )
    return f'<div class="lnb-static">{top}{"".join(parts)}{err}</div>'
