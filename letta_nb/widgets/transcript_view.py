"""The transcript as few HTML widgets: sealed messages in blocks, live ones in segments.

Messages of a run that has its stop_reason (or of a finished chain) are *sealed*: they never
change again. Sealed messages that were never shown live are rendered together into ONE HTML
widget per sync (a finished transcript is a single widget); messages that were live keep the
widgets they had, which are never touched again.

A live message is one HTML widget, except assistant and reasoning text, which is split into
*segments* of about `segment` characters: only the open (last) segment is re-sent as the text
grows; a full segment is sent once. Segments are cut after a space or at a newline (the newline
becomes the block boundary), so one message reads as one continuous text, without margins
between its segments. With a `tail` limit the view keeps about `tail` characters of a long
message visible: older segments leave `children` (their widgets are closed) and a notice
"… N earlier characters" stands in for them; the full text stays in the Python transcript.

Each sync compares a cheap signature per live message (text length, name, status, seq) and
touches only what moved; `sync` returns how many comm messages it caused.
"""

from __future__ import annotations

import dataclasses
import html
import sys
from typing import Any

import ipywidgets as widgets

from ..core import render
from ..core.render import entry_html
from ..core.transcript import Entry
from ..protocol import MessageType as MT
from .shared import Shared

#: Kinds whose text streams in long runs of deltas: shown as segments while live.
SEGMENTED = frozenset({MT.ASSISTANT, MT.REASONING, MT.HIDDEN_REASONING})
#: Default characters per segment of a live message.
SEGMENT = 1024
#: A message that grew by n characters since the last sync gets segments of >= FAST * n.
FAST = 2


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


def text_from(buf: Any, start: int) -> tuple[int, str]:
    """(size, text[start:]) of a text buffer, from one consistent snapshot of it.

    `len()` and `tail()` read at different moments while the reader thread appends, so an
    offset into the text needs the buffer's own snapshot (blocks + pending parts).
    """
    snap = getattr(buf, "_snapshot", None)
    if snap is None:
        text = str(buf)
        return len(text), text[start:]
    blocks, parts = snap()
    size = sum(map(len, blocks)) + sum(map(len, parts))
    need = size - start
    if need <= 0:
        return size, ""
    pieces: list[str] = []
    have = 0
    for piece in (*reversed(parts), *reversed(blocks)):
        pieces.append(piece)
        have += len(piece)
        if have >= need:
            break
    return size, "".join(reversed(pieces))[-need:]


def cut_point(text: str, size: int) -> tuple[int, int] | None:
    """Where a segment of `text` ends once it holds `size` characters: (end, skip).

    The segment is `text[:end]`; the next one starts at `end + skip`. Prefers the last newline
    in the second half (dropped: the block boundary is the line break), then the last space
    (kept), else a hard cut at `size`.
    """
    if len(text) < size:
        return None
    half = size // 2
    i = text.rfind("\n", half, size)
    if i > 0:
        return i, 1
    i = text.rfind(" ", half, size)
    if i >= 0:
        return i + 1, 0
    return size, 0


def _kind_class(kind: str) -> str:
    return "lnb-" + kind.replace("_", "-")


def segment_html(entry: Entry, text: str, *, head: bool) -> str:
    """One segment of a live message; the head segment carries the message's class."""
    kind = entry.kind
    style = render._STYLE.get(kind, "")  # the same look as entry_html
    body = html.escape(text)
    if head:
        if kind in (MT.REASONING, MT.HIDDEN_REASONING):
            body = f"<details open><summary>thinking</summary>{body}</details>"
        return (
            f'<div class="{_kind_class(kind)} lnb-seg" '
            f'style="white-space:pre-wrap;margin:2px 0 0;{style}">{body}</div>'
        )
    return (
        f'<div class="lnb-cont lnb-seg" style="white-space:pre-wrap;margin:0;{style}">{body}</div>'
    )


def notice_html(entry: Entry, earlier: int) -> str:
    """Stands in for a live message's dropped segments (and carries the message's class)."""
    return (
        f'<div class="{_kind_class(entry.kind)} lnb-notice" style="margin:2px 0 0">'
        f'<span style="color:#9ca3af">… {earlier:,} earlier characters (full text in '
        f"<code>.transcript</code>)</span></div>"
    )


def _signature(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.kind,
        len(entry.text),
        entry.name,
        entry.status,
        entry.tool_call_id,
        entry.seq_last,
        len(entry.extra),
    )


class _Item:
    """The widgets of one live (or once-live) message, or of one sealed block."""

    __slots__ = (
        "index",
        "notice",
        "open",
        "open_at",
        "seg",
        "segmented",
        "segs",
        "sig",
        "size",
        "starts",
    )

    def __init__(
        self,
        index: int | None,
        widget: widgets.HTML | None,
        *,
        segmented: bool = False,
        sig: tuple[Any, ...] | None = None,
    ) -> None:
        self.index = index  # entry index; None for a sealed block
        self.open = widget  # the single widget, or the open segment (None until built)
        self.segmented = segmented
        self.sig = sig
        self.open_at = 0  # text offset where the open segment starts
        self.segs: list[widgets.HTML] = []  # visible full segments, oldest first
        self.starts: list[int] = []  # their text offsets
        self.notice: widgets.HTML | None = None
        self.size = 0  # text size at the last sync
        self.seg = 0  # this message's segment size (grows with its stream rate)

    def views(self) -> list[widgets.HTML]:
        head = [self.notice] if self.notice is not None else []
        tail = [self.open] if self.open is not None else []
        return [*head, *self.segs, *tail]


class TranscriptView(widgets.VBox):
    """Message widgets for one transcript; `sync` returns how many comm messages it caused."""

    def __init__(
        self,
        tail: int | None = 4000,
        *,
        segment: int = SEGMENT,
        shared: Shared | None = None,
        **kwargs: Any,
    ) -> None:
        self._shared = shared if shared is not None else Shared()
        kwargs.setdefault("layout", self._shared.layout())
        kwargs.setdefault("_dom_classes", ("lnb-transcript",))
        super().__init__(**kwargs)
        self.tail = tail
        # Segments: at most half the tail, and about `tail` characters visible in all.
        self.segment = max(1, min(segment, tail // 2)) if tail else max(1, segment)
        self._source: Any = None
        self._items: list[_Item] = []
        self._live: list[_Item] = []  # items of entries [sealed, covered), in order
        self._sealed = 0  # entries before this index are final
        self._covered = 0  # entries before this index have widgets (or are in a block)

    @property
    def sealed(self) -> int:
        """How many leading messages are final and will never be re-sent."""
        return self._sealed

    def _html(self, value: str) -> widgets.HTML:
        # CSS classes go in with the comm_open (add_class afterwards is one more message).
        return widgets.HTML(
            value=value, _dom_classes=("lnb-part",), **self._shared.kw(widgets.HTML, margin="0")
        )

    def _reset(self, transcript: Any) -> None:
        old = [w for item in self._items for w in item.views()]
        self._items, self._live = [], []
        self._sealed = self._covered = 0
        self._source = transcript
        self.children = ()
        for w in old:
            widgets.Widget.close(w)  # not its shared layout/style

    # ---- sync ----------------------------------------------------------------------------
    def sync(self, transcript: Any, *, final: bool = False) -> int:
        if transcript is not self._source:
            self._reset(transcript)
        if transcript is None:
            return 0
        # Runs stopped *before* the entries are read: their messages are complete as read.
        stopped = dict(getattr(transcript, "stop_reasons", None) or {}).keys()
        entries: list[Entry] = transcript.entries
        count = len(entries)  # read once: the reader thread may append meanwhile
        seal = self._seal_upto(entries, count, stopped, final)
        sent = 0
        dropped: list[widgets.HTML] = []
        structure = False
        for item in self._live:  # entries that have widgets: update what moved
            n, gone = self._update(item, entries[item.index])  # type: ignore[index]
            sent += n
            if gone is not None:
                structure = True
                dropped += gone
        if seal > self._covered:  # sealed before ever shown: one block for all of them
            value = "".join(
                snapshot_html(entries[i], self.tail) for i in range(self._covered, seal)
            )
            self._items.append(_Item(None, self._html(value)))
            self._covered = seal
            sent += 1
            structure = True
        for i in range(self._covered, count):  # new live messages
            item = self._new_item(i, entries[i])
            self._items.append(item)
            self._live.append(item)
            sent += len(item.views())  # their comm_opens
            structure = True
        self._covered = max(self._covered, count)
        self._sealed = seal
        self._live = [item for item in self._live if item.index >= seal]  # type: ignore[operator]
        if structure:
            children = tuple(w for item in self._items for w in item.views())
            if children != self.children:
                self.children = children
                sent += 1
        for w in dropped:
            widgets.Widget.close(w)
            sent += 1
        return sent

    def _seal_upto(self, entries: list[Entry], count: int, stopped: Any, final: bool) -> int:
        i = self._sealed
        while i < count:
            rid = entries[i].run_id
            if final or (rid is not None and rid in stopped) or (rid is None and i < count - 1):
                i += 1
            else:
                break
        return i

    # ---- one message ---------------------------------------------------------------------
    def _new_item(self, index: int, entry: Entry) -> _Item:
        sig = _signature(entry)
        if entry.kind not in SEGMENTED:
            return _Item(index, self._html(snapshot_html(entry, self.tail)), sig=sig)
        item = _Item(index, None, segmented=True, sig=sig)
        self._segments(item, entry)  # creates the widgets with their values: comm_opens only
        return item

    def _update(self, item: _Item, entry: Entry) -> tuple[int, list[widgets.HTML] | None]:
        """Bring one message's widgets up to date: (messages sent, dropped widgets or None
        when the item's widget list is unchanged)."""
        sig = _signature(entry)
        if sig == item.sig:
            return 0, None
        item.sig = sig
        if not item.segmented:
            assert item.open is not None
            value = snapshot_html(entry, self.tail)
            if item.open.value == value:
                return 0, None
            item.open.value = value
            return 1, None
        return self._segments(item, entry)

    def _put(self, w: widgets.HTML | None, value: str) -> tuple[widgets.HTML, int]:
        """`w` showing `value` (a new widget when `w` is None): (widget, messages sent)."""
        if w is None:
            return self._html(value), 1
        if w.value == value:
            return w, 0
        w.value = value
        return w, 1

    def _segments(self, item: _Item, entry: Entry) -> tuple[int, list[widgets.HTML] | None]:
        size, text = text_from(entry.text, item.open_at)
        tail = self.tail
        # A fast stream gets longer segments (up to half the tail): each full segment costs a
        # few comm messages (a widget, `children`, the notice), and those count against
        # max_hz; a slow one keeps short segments, so an update re-sends little.
        grown = size - item.size if item.size else 0  # a first sync shows a backlog
        item.size = size
        seg = item.seg = max(item.seg, self.segment, min(FAST * grown, tail // 2 if tail else 0))
        keep = max(1, tail // seg) if tail else None
        views_before = item.views()
        dropped: list[widgets.HTML] = []
        pieces: list[tuple[int, str]] = []  # full segments of the open text: (start, text)
        at = item.open_at
        if tail is not None and len(text) > tail + seg:
            # Far behind (a fast stream or replay): skip to the last `tail` characters, shown
            # as ONE full segment plus the open one, so a flush re-sends few widgets.
            dropped += item.segs
            item.segs, item.starts = [], []
            at = size - tail
            text = text[at - item.open_at :]
            end, skip = cut_point(text, len(text)) or (len(text), 0)
            pieces.append((at, text[:end]))
            at += end + skip
            text = text[end + skip :]
        while (cut := cut_point(text, seg)) is not None:
            end, skip = cut
            pieces.append((at, text[:end]))
            at += end + skip
            text = text[end + skip :]
        # Widgets to fill, in order: the open one (it becomes the first new full segment),
        # then those of dropped segments (a value update costs less than close + open).
        spare: list[widgets.HTML] = [item.open] if item.open is not None else []
        if pieces:
            # Only the last `keep` full segments stay visible: never build the others.
            excess = max(0, len(item.segs) + len(pieces) - keep) if keep is not None else 0
            old_drop = min(excess, len(item.segs))
            dropped += item.segs[:old_drop]
            item.segs, item.starts = item.segs[old_drop:], item.starts[old_drop:]
            pieces = pieces[excess - old_drop :]
        spare += dropped
        sent = 0
        for start, piece in pieces:
            w, n = self._put(
                spare.pop(0) if spare else None, segment_html(entry, piece, head=start == 0)
            )
            sent += n
            item.segs.append(w)
            item.starts.append(start)
        item.open_at = at
        value = segment_html(entry, text, head=at == 0) if text or at == 0 else ""
        item.open, n = self._put(spare.pop(0) if spare else None, value)
        sent += n
        dropped = spare  # left over: closed by the caller after the children update
        earlier = item.starts[0] if item.starts else item.open_at
        if earlier > 0:
            item.notice, n = self._put(item.notice, notice_html(entry, earlier))
            sent += n
        if item.views() == views_before:
            return sent, None
        return sent, dropped
