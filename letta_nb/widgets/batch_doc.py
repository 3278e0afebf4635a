"""The batch view's document and its changes: the view's logic, no ipywidgets, no browser.

The browser (`static/batch_view.js`) displays a *document*: a header (counts by status,
progress, rate, ETA, a pause or slow-down line), one short row per item and the inbox (items
waiting for an approval, each with its readable tool calls). `BatchDoc` keeps a mirror of
what the browser has and turns changes of the batch into ops, so a message carries only the
rows that changed, whatever the number of items:

* ``["i", pos, row]`` sets item ``pos``'s row ``[label, status, answer, tokens, seconds,
  error, run]`` (the answer and error clipped: the full text stays in `Batch.frame`);
* ``["b", inbox]`` replaces the inbox: ``[{"i": pos, "l": label, "s": state, "err"?,
  "c": [{"nm": tool, "id": call id, "f": fields | "x": raw}]}]``.

Messages and the document share the run view's framing (`doc.py`): ``{"t": "d", "n", "o",
"h"?}``, ``{"t": "doc", "doc"}`` after a ``sync``, the deflated `snapshot` trait. The
document is ``{"v": 1, "n", "h", "rows": [row...], "inbox": [...]}``; `apply_message` is the
reference of what the browser does.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..batch.state import OVER, RETRYABLE, STATUSES, WAITING
from ..core.render import one_line, tool_fields

if TYPE_CHECKING:
    from ..batch import Batch, ItemState

PROTOCOL = 1
#: Characters of an answer / an error a row carries (the full text stays in `Batch.frame`).
ANSWER_CHARS = 160
ERROR_CHARS = 120
#: Header fields a person sees change: a change in one goes out at once.
VISIBLE = ("st", "c", "pause", "slow", "ctl", "retry", "note", "open", "live")


def _clip(text: str | None, chars: int) -> str:
    line = one_line(text)
    return line if len(line) <= chars else line[: chars - 1] + "…"


def shown_label(label: Any) -> str:
    """An index label as a person reads it (`0`, `Airport`, `('Airport', 3)`)."""
    return label if isinstance(label, str) else str(label)


def row_of(item: ItemState, label: Any) -> list[Any]:
    """What the table shows of one item."""
    return [
        shown_label(label),
        item.status,
        _clip(item.answer, ANSWER_CHARS),
        item.tokens,
        None if item.duration is None else round(item.duration, 2),
        _clip(item.error, ERROR_CHARS),
        item.run_id,
    ]


def inbox_of(batch: Batch) -> list[dict[str, Any]]:
    """The waiting items with their readable requests (`core.render.tool_fields`)."""
    out: list[dict[str, Any]] = []
    for pos, chain in batch.runner.waiting():
        state = chain.approval
        if state is None:
            continue
        calls = []
        for call in state.tool_calls:
            raw = str(call.get("arguments") or "")
            entry: dict[str, Any] = {
                "nm": call.get("name") or "tool",
                "id": call.get("tool_call_id"),
            }
            fields = tool_fields(raw)
            if fields is None:
                entry["x"] = raw[-4000:]
            else:
                entry["f"] = fields
            calls.append(entry)
        label = batch.index[pos]
        box: dict[str, Any] = {
            "i": pos,
            "l": shown_label(label),
            "s": state.state,
            "c": calls,
        }
        if state.error:
            box["err"] = one_line(state.error)
        out.append(box)
    return out


def elapsed(items: list[ItemState], now: float) -> float | None:
    """Wall seconds from the first item's start to now (or to the last item's end when the
    batch is over); None before anything started."""
    starts = [i.started_at for i in items if i.started_at]
    if not starts:
        return None
    if all(i.status in OVER for i in items):
        ends = [i.ended_at for i in items if i.ended_at]
        return max(0.0, (max(ends) if ends else now) - min(starts))
    return max(0.0, now - min(starts))


def build_header(
    batch: Batch, *, note: str | None = None, open_pos: int | None = None
) -> dict[str, Any]:
    runner = batch.runner
    items = runner.items
    status = batch.status
    counts = batch.counts
    done = sum(n for s, n in counts.items() if s in OVER)
    header: dict[str, Any] = {
        "ag": batch.agent_name or batch.agent_id,
        "key": batch.key,
        "st": status,
        "tot": len(items),
        "c": counts,
        "done": done,
        "fl": runner.in_flight,
        "conc": runner.pace.concurrency,
        "live": status in ("running", "paused"),
        "ctl": status not in ("done", "detached"),
        "retry": sum(n for s, n in counts.items() if s in RETRYABLE),
        "tok": batch.tokens,
        "act": elapsed(items, time.time()),
    }
    rate = batch.rate
    if rate:
        header["rate"] = round(rate, 3)
    eta = batch.eta
    if eta is not None and status == "running":
        header["eta"] = round(eta, 1)
    if runner.paused:
        header["pause"] = runner.paused
    if runner.pace.slowed:
        header["slow"] = (
            f"rate limited by the server: {runner.pace.limit} of {runner.pace.concurrency} "
            "in flight for now"
        )
    if counts.get(WAITING):
        header["wait"] = counts[WAITING]
    if note:
        header["note"] = note
    if open_pos is not None:
        header["open"] = open_pos
    return header


def visible_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if old is None:
        return True
    return any(old.get(k) != new.get(k) for k in VISIBLE)


class BatchDoc:
    """The mirror of what browser views have of one batch, and the ops that bring them on."""

    def __init__(self) -> None:
        self.n = 0
        self.header: dict[str, Any] = {}
        self.rows: list[list[Any]] = []
        self.inbox: list[dict[str, Any]] = []
        self.note: str | None = None
        self.open: int | None = None
        self._seen: list[int] = []  # the runner version each row reflects

    def diff(self, batch: Batch) -> tuple[list[list[Any]], dict[str, Any], bool]:
        """(ops since the last diff, the header now, whether a person would see a change)."""
        runner = batch.runner
        items = runner.items
        versions = runner.versions
        ops: list[list[Any]] = []
        if len(self._seen) != len(items):  # the first diff: every row
            self._seen = [-1] * len(items)
            self.rows = [[] for _ in items]
        index = batch.index
        for pos, version in enumerate(versions):
            if version != self._seen[pos]:
                self._seen[pos] = version
                row = row_of(items[pos], index[pos])
                if row != self.rows[pos]:
                    self.rows[pos] = row
                    ops.append(["i", pos, row])
        inbox = inbox_of(batch) if runner.chains() else []
        if inbox != self.inbox:
            self.inbox = inbox
            ops.append(["b", inbox])
        header = build_header(batch, note=self.note, open_pos=self.open)
        visible = visible_change(self.header or None, header) or bool(ops)
        self.header = header
        return ops, header, visible

    def message(self, ops: list[list[Any]], header: dict[str, Any] | None) -> dict[str, Any]:
        self.n += 1
        msg: dict[str, Any] = {"t": "d", "n": self.n, "o": ops}
        if header is not None:
            msg["h"] = header
        return msg

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL,
            "n": self.n,
            "h": self.header,
            "rows": [list(r) for r in self.rows],
            "inbox": copy.deepcopy(self.inbox),
        }


def empty_doc() -> dict[str, Any]:
    return {"v": PROTOCOL, "n": 0, "h": {}, "rows": [], "inbox": []}


def apply_message(doc: dict[str, Any], msg: Mapping[str, Any]) -> bool:
    """Apply one message as the browser does; False if it was not next in line."""
    if msg.get("t") == "doc":
        new = msg["doc"]
        if new["n"] < doc["n"]:
            return False
        doc.clear()
        doc.update(copy.deepcopy(new))
        return True
    if msg["n"] != doc["n"] + 1:
        return False
    rows: list[Any] = doc["rows"]
    for op in msg.get("o", ()):
        if op[0] == "i":
            pos = op[1]
            while len(rows) <= pos:
                rows.append([])
            rows[pos] = list(op[2])
        elif op[0] == "b":
            doc["inbox"] = copy.deepcopy(op[1])
    if "h" in msg:
        doc["h"] = msg["h"]
    doc["n"] = msg["n"]
    return True


__all__ = ["STATUSES", "BatchDoc", "apply_message", "build_header", "empty_doc", "row_of"]
