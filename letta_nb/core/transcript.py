"""The transcript reducer: a run chain's frames folded into messages.

Deltas of one message share an ``id``; they are joined (per run, per message type) in arrival
order. Frames are deduplicated per run by seq (see `SeqTracker`), so replays and resumes can be
fed in blindly. Runs of one chain (an approval starts a new run whose seq restarts at 1) keep
separate seq trackers, never one global watermark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol import MessageType as MT
from ..protocol import StopReason, content_text
from .chunks import Chunk, SeqTracker
from .textbuf import TextBuffer


@dataclass(slots=True)
class Entry:
    """One message of the transcript, joined from its deltas."""

    kind: str
    run_id: str | None
    id: str | None = None
    step_id: str | None = None
    date: str | None = None
    text: TextBuffer = field(default_factory=TextBuffer)
    name: str | None = None
    tool_call_id: str | None = None
    status: str | None = None
    seq_first: int | None = None
    seq_last: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "id": self.id,
            "step_id": self.step_id,
            "date": self.date,
            "text": str(self.text),
            "name": self.name,
            "tool_call_id": self.tool_call_id,
            "status": self.status,
            "seq_first": self.seq_first,
            "seq_last": self.seq_last,
            "extra": self.extra,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Entry:
        fields = dict(rec)
        fields["text"] = TextBuffer(fields.get("text") or "")
        fields["extra"] = dict(fields.get("extra") or {})
        return cls(**fields)


def _tool_call_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    call = data.get("tool_call")
    if not call:
        calls = data.get("tool_calls")
        call = calls[0] if isinstance(calls, list) and calls else calls
    return call if isinstance(call, Mapping) else {}


class Transcript:
    """Messages of a run chain; `version` changes whenever something visible changed."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.runs: list[str] = []
        self.version = 0
        self._seq: dict[str | None, SeqTracker] = {}
        self._index: dict[tuple[str | None, str, str], Entry] = {}
        self.stop_reasons: dict[str, str] = {}

    # ---- feeding -------------------------------------------------------------------------
    def tracker(self, run_id: str | None) -> SeqTracker:
        tracker = self._seq.get(run_id)
        if tracker is None:
            tracker = self._seq[run_id] = SeqTracker(run_id)
            if run_id is not None and run_id not in self.runs:
                self.runs.append(run_id)
        return tracker

    def begin_stream(self, run_id: str, starting_after: int) -> None:
        """A reader (re)connects to `run_id` after `starting_after`: hidden seqs count from it."""
        self.tracker(run_id).begin(starting_after)

    def skip_hole(self, run_id: str, seq: int) -> None:
        """The server no longer has the frames of `run_id` before `seq`: continue without them."""
        self.tracker(run_id).skip_hole(seq)
        self.version += 1

    def holes(self, run_id: str | None = None) -> list[tuple[int, int]]:
        """Seq ranges the server no longer had, of one run or (None) of the whole chain."""
        if run_id is not None:
            tracker = self._seq.get(run_id)
            return list(tracker.holes) if tracker else []
        return [h for rid in self.runs for h in self.holes(rid)]

    def last_seq(self, run_id: str) -> int:
        tracker = self._seq.get(run_id)
        return tracker.last_seq if tracker else 0

    def apply(self, chunk: Chunk, run_id: str | None = None) -> Chunk | None:
        """Fold one frame in; returns it with its effective seq, or None if it was a duplicate.

        `run_id` names the run whose stream this frame came from, for frames that do not say
        (stop_reason, usage_statistics). A frame past a hole in the run's seqs raises `SeqGap`
        and folds nothing (see `SeqTracker`).
        """
        rid = chunk.run_id or run_id
        accepted = self.tracker(rid).accept(chunk)
        if accepted is None or accepted.message_type == MT.PING:
            return accepted
        self._fold(accepted, rid)
        self.version += 1
        return accepted

    def extend(self, chunks: Iterable[Chunk], run_id: str | None = None) -> None:
        for chunk in chunks:
            self.apply(chunk, run_id)

    def _fold(self, chunk: Chunk, run_id: str | None) -> None:
        kind = chunk.message_type
        data = chunk.data
        seq = chunk.seq_id
        if kind == MT.STOP_REASON:
            reason = str(data.get("stop_reason"))
            if run_id is not None:
                self.stop_reasons[run_id] = reason
            self._add(Entry(kind, run_id, text=TextBuffer(reason), seq_first=seq, seq_last=seq))
            return
        if kind == MT.USAGE:
            usage = {k: v for k, v in data.items() if k != "message_type"}
            self._add(Entry(kind, run_id, seq_first=seq, seq_last=seq, extra=usage))
            return
        if kind == MT.ERROR:
            text = str(data.get("message") or data.get("detail") or "the run failed")
            body = {k: v for k, v in data.items() if k != "message_type"}
            self._add(
                Entry(kind, run_id, text=TextBuffer(text), seq_first=seq, seq_last=seq, extra=body)
            )
            return

        msg_id = data.get("id")
        key = (run_id, str(msg_id), kind)
        entry = self._index.get(key) if msg_id else None
        if entry is None:
            date = data.get("date")
            if date is not None:  # the backend leaves SDK datetimes as they are (hot path)
                date = date.isoformat() if hasattr(date, "isoformat") else str(date)
            entry = Entry(
                kind, run_id, id=msg_id, step_id=data.get("step_id"), date=date, seq_first=seq
            )
            self._add(entry)
            if msg_id:
                self._index[key] = entry
        entry.seq_last = seq

        if kind == MT.ASSISTANT:
            entry.text.append(content_text(data.get("content")))
        elif kind == MT.REASONING:
            entry.text.append(str(data.get("reasoning") or ""))
        elif kind == MT.HIDDEN_REASONING:
            entry.text.append(str(data.get("hidden_reasoning") or ""))
        elif kind in (MT.TOOL_CALL, MT.APPROVAL_REQUEST):
            call = _tool_call_of(data)
            entry.name = entry.name or call.get("name")
            entry.tool_call_id = entry.tool_call_id or call.get("tool_call_id")
            entry.text.append(str(call.get("arguments") or ""))
            calls = data.get("tool_calls")
            if isinstance(calls, list) and calls and all(isinstance(c, Mapping) for c in calls):
                entry.extra["tool_calls"] = [dict(c) for c in calls]
        elif kind == MT.TOOL_RETURN:
            entry.name = data.get("name") or entry.name
            entry.tool_call_id = data.get("tool_call_id") or entry.tool_call_id
            entry.status = data.get("status") or entry.status
            entry.text.append(str(data.get("tool_return") or ""))
        elif kind == MT.USER:
            entry.text.append(content_text(data.get("content")))
        else:
            entry.text.append(content_text(data.get("content")))
            entry.extra.setdefault("raw", dict(data))

    def _add(self, entry: Entry) -> None:
        self.entries.append(entry)

    # ---- reading -------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The newest run of the chain."""
        return self.runs[-1] if self.runs else None

    @property
    def stop_reason(self) -> str | None:
        rid = self.run_id
        return self.stop_reasons.get(rid) if rid else None

    @property
    def error(self) -> Entry | None:
        for entry in reversed(self.entries):
            if entry.kind == MT.ERROR and entry.run_id == self.run_id:
                return entry
        return None

    def pending_tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls awaiting approval, if the newest run stopped with requires_approval."""
        rid = self.run_id
        if rid is None or self.stop_reasons.get(rid) != StopReason.REQUIRES_APPROVAL:
            return []
        calls: list[dict[str, Any]] = []
        for entry in self.entries:
            if entry.run_id == rid and entry.kind == MT.APPROVAL_REQUEST:
                calls.append(
                    {
                        "tool_call_id": entry.tool_call_id,
                        "name": entry.name,
                        "arguments": str(entry.text),
                    }
                )
        return calls

    def total_tokens(self) -> int | None:
        """Tokens the chain's runs reported (their usage frames), None before any report."""
        totals = [e.extra.get("total_tokens") for e in self.entries if e.kind == MT.USAGE]
        known = [int(t) for t in totals if isinstance(t, int)]
        return sum(known) if known else None

    def assistant_text(self) -> str:
        """The agent's answer text across the chain, messages separated by blank lines."""
        return "\n\n".join(str(e.text) for e in self.entries if e.kind == MT.ASSISTANT)

    def to_records(self) -> list[dict[str, Any]]:
        return [e.to_record() for e in self.entries]

    def seq_state(self) -> dict[str, int]:
        return {rid: t.last_seq for rid, t in self._seq.items() if rid is not None}

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], seq_state: Mapping[str, int] | None = None
    ) -> Transcript:
        """Restore a cached transcript (cursor store) so a resume continues after it."""
        tr = cls()
        for rec in records:
            entry = Entry.from_record(rec)
            tr.entries.append(entry)
            if entry.run_id and entry.run_id not in tr.runs:
                tr.runs.append(entry.run_id)
            if entry.kind == MT.STOP_REASON and entry.run_id:
                tr.stop_reasons[entry.run_id] = str(entry.text)
            elif entry.id:
                tr._index[(entry.run_id, str(entry.id), entry.kind)] = entry
        for rid, seq in (seq_state or {}).items():
            tr.tracker(rid).last_seq = int(seq)
        tr.version = len(tr.entries)
        return tr
