"""The transcript as one HTML widget per message; only changed messages are re-sent.

Each sync compares a cheap signature per message (text length, name, status, seq) and touches
only the widgets whose signature moved. Messages of a run that has its stop_reason are sealed:
they are never looked at again, let alone re-sent. Long messages show their last `tail`
characters; the full text stays in the Python transcript.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import ipywidgets as widgets

from ..core.render import entry_html
from ..core.transcript import Entry


class _Snapshot:
    """A frozen view of a growing TextBuffer: its size and (at most) its last `tail` chars.

    `TextBuffer.__str__` compacts blocks in place, which can lose a piece that the reader thread
    appends at the same moment; `tail()` only reads, so the view renders from this instead.
    """

    __slots__ = ("_size", "_text")

    def __init__(self, size: int, text: str) -> None:
        self._size = size
        self._text = text

    def __len__(self) -> int:
        return self._size

    def __str__(self) -> str:
        return self._text

    def tail(self, limit: int) -> str:
        return self._text[-limit:] if limit > 0 else ""


def snapshot_html(entry: Entry, tail: int | None) -> str:
    """`entry_html` of the entry as it is now, without mutating its live text buffer."""
    buf = entry.text
    size = len(buf)
    if tail is not None and size > tail:
        text = buf.tail(tail)
    else:
        text = buf.tail(sys.maxsize)  # whole text, read-only
        size = len(text)
    frozen = dataclasses.replace(entry, text=_Snapshot(size, text))  # type: ignore[arg-type]
    return entry_html(frozen, tail)


def _signature(entry: Entry) -> tuple[Any, ...]:
    return (entry.kind, len(entry.text), entry.name, entry.status, entry.tool_call_id,
            entry.seq_last, len(entry.extra))


class TranscriptView(widgets.VBox):
    """Message widgets for one transcript; `sync` returns how many widgets it touched."""

    def __init__(self, tail: int | None = 4000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("lnb-transcript")
        self.tail = tail
        self._source: Any = None
        self._items: list[widgets.HTML] = []
        self._sigs: list[tuple[Any, ...]] = []
        self._sealed = 0

    @property
    def sealed(self) -> int:
        """How many leading messages are final and will never be re-sent."""
        return self._sealed

    def _reset(self, transcript: Any) -> None:
        for item in self._items:
            item.close()
        self._items, self._sigs, self._sealed = [], [], 0
        self._source = transcript
        self.children = ()

    def sync(self, transcript: Any, *, final: bool = False) -> int:
        if transcript is not self._source:
            self._reset(transcript)
        if transcript is None:
            return 0
        # Runs stopped *before* the entries are read: their messages are complete as read.
        stopped = dict(getattr(transcript, "stop_reasons", None) or {}).keys()
        entries: list[Entry] = transcript.entries
        count = len(entries)  # read once: the reader thread may append meanwhile
        touched = 0
        added: list[widgets.HTML] = []
        for i in range(self._sealed, count):
            entry = entries[i]
            sig = _signature(entry)
            if i < len(self._items):
                if sig != self._sigs[i]:
                    self._sigs[i] = sig
                    self._items[i].value = snapshot_html(entry, self.tail)
                    touched += 1
            else:
                item = widgets.HTML(value=snapshot_html(entry, self.tail))
                self._items.append(item)
                self._sigs.append(sig)
                added.append(item)
                touched += 1
        if added:
            self.children = (*self.children, *added)
        self._advance_seal(entries, count, stopped, final)
        return touched

    def _advance_seal(self, entries: list[Entry], count: int, stopped: Any,
                      final: bool) -> None:
        i = self._sealed
        while i < count:
            rid = entries[i].run_id
            if final or (rid is not None and rid in stopped) or (rid is None and i < count - 1):
                i += 1
            else:
                break
        self._sealed = i
