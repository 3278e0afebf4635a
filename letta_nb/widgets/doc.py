"""The run view's document and its changes: all the view's logic, no ipywidgets, no browser.

The browser (`static/run_view.js`) only displays a *document*: a header and one item per
transcript message (`core.render.entry_item`). `ViewDoc` keeps a mirror of what the browser
has and turns each change of the run chain into **append-only ops**, so a growing answer costs
its new characters, never a re-send:

* ``["e", i, item]`` sets item ``i`` (a new message, or a small one that changed: a tool call
  whose arguments completed, an approval that was answered);
* ``["a", i, text]`` appends ``text`` to item ``i``'s ``x`` (streamed answer / reasoning text;
  the browser keeps its last ``tl`` characters, counting the cut ones in ``c``).

One message is ``{"t": "d", "n": N, "o": [ops], "h": header?}``; ``n`` numbers the messages of
one view, so a browser view that missed some (a page reload, a second display) notices the gap
and asks for the whole document (``{"t": "sync"}`` → ``{"t": "doc", "doc": …}``). The document
itself (``snapshot()``) is ``{"v": 1, "n": N, "tl": tail, "h": header, "e": [items]}``: what a
new view renders first, and what a saved notebook keeps. `apply_message` is the reference of
what the browser does with a message (tests and the benchmark check the wire against it).

`Batcher` decides when a message goes out: a status or other visible change at once, streamed
text when it is worth its ~0.6 kB message envelope or has waited `max_wait`, never more than
`max_hz` messages a second, and the first change after a quiet spell at once (a re-run cell shows
its next frame without waiting out a window).
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import approval as ap
from ..core.render import STREAMED, Item, entry_item, one_line
from ..core.status import LIVE, OVER, ChainStatus
from ..core.transcript import Entry
from ..protocol import MessageType as MT

if TYPE_CHECKING:
    from .._protocols import RunChain

PROTOCOL = 1
Op = list[Any]
#: Header fields a person sees: a change in one of them goes out at once. The others
#: (seq, frames/s, active seconds) ride along with the next message (the browser ticks the
#: clock itself while the run is live).
VISIBLE = ("ag", "cv", "st", "tok", "nr", "warn", "err", "det", "ctl", "ap", "note", "live")
#: Bytes of the message envelope (header, parent header, signature) a Jupyter message costs.
ENVELOPE = 600
#: Compress a message body from this many bytes on (the browser inflates it).
COMPRESS_FROM = 400


# ---- text of a growing buffer ---------------------------------------------------------------
def text_since(buf: Any, start: int) -> tuple[int, str]:
    """(size, text[start:size]) of a growing text buffer, from one consistent snapshot.

    `len()` and `tail()` read at different moments while the reader thread appends, so an
    offset into the text needs the buffer's own snapshot (its blocks and pending parts).
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


# ---- the header -----------------------------------------------------------------------------
def header_error(chain: RunChain, entries: list[Entry]) -> str | None:
    """The chain's error, unless the transcript already shows it (it appears once)."""
    error = one_line(chain.error)
    if not error:
        return None
    for entry in entries:
        if entry.kind == MT.ERROR and one_line(str(entry.text)) == error:
            return None
    return error


def pending_approval(state: ap.ApprovalState | None, status: str) -> dict[str, Any] | None:
    """What the Approve / Deny controls need: the pending tool calls, sending, a send error."""
    if state is None or status != ChainStatus.REQUIRES_APPROVAL:
        return None
    if state.state not in (ap.PENDING, ap.SENDING):
        return None
    ids = [str(c.get("tool_call_id")) for c in state.tool_calls if c.get("tool_call_id")]
    out: dict[str, Any] = {"ids": ids, "s": state.state}
    if state.error:
        out["err"] = one_line(state.error)
    return out


def build_header(
    chain: RunChain,
    agent: str | None,
    *,
    entries: list[Entry],
    rate: float | None = None,
    note: str | None = None,
    conversation: str | None = None,
) -> dict[str, Any]:
    status = str(chain.status or ChainStatus.STARTING)
    runs = chain.runs
    header: dict[str, Any] = {
        "ag": agent or chain.agent_id,
        "st": status,
        "act": round(chain.active_seconds, 2),
        "live": status in LIVE,
        "tok": chain.transcript.total_tokens(),
        "run": chain.run_id or (runs[-1] if runs else None),
        "nr": len(runs),
        "seq": chain.last_seq,
        "ctl": status not in OVER,
        "fin": status in OVER,
    }
    if chain.conversation_id:  # its label (summary or short id); the id on hover
        header["cv"] = conversation or chain.conversation_id[:13]
        header["cid"] = chain.conversation_id
    if rate is not None:
        header["fps"] = round(rate, 1)
    if chain.warning:
        header["warn"] = one_line(chain.warning)
    error = header_error(chain, entries)
    if error:
        header["err"] = error
    if status == ChainStatus.DETACHED:
        header["det"] = chain.last_seq
    pending = pending_approval(chain.approval, status)
    if pending:
        header["ap"] = pending
    if note:
        header["note"] = note
    return header


def visible_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if old is None:
        return True
    return any(old.get(k) != new.get(k) for k in VISIBLE)


# ---- the document ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Mirror:
    """What the browser has of one entry."""

    item: Item
    size: int  # characters of the entry's text the browser has seen (streamed kinds)
    sig: tuple[Any, ...]


def _signature(entry: Entry, outcome: Any) -> tuple[Any, ...]:
    return (len(entry.text), entry.name, entry.status, entry.tool_call_id, outcome)


class ViewDoc:
    """The mirror of what browser views have of one chain, and the ops that bring them on."""

    def __init__(
        self, *, tail: int | None = 4000, agent: str | None = None, conversation: str | None = None
    ) -> None:
        self.tail = tail
        self.agent = agent
        self.conversation = conversation
        self.n = 0
        self.header: dict[str, Any] = {}
        self.note: str | None = None
        self._source: Any = None
        self._mirror: list[_Mirror] = []
        self._sealed = 0  # entries before this index can no longer change
        self._asks: list[int] = []  # approval request entries: their outcome may change
        self._outcomes: dict[str, dict[str, Any]] = {}  # tool_call_id → {"ok", "why"}
        self._rate: tuple[float, int] | None = None
        self.rate: float | None = None

    # ---- outcomes of approvals --------------------------------------------------------
    def _learn_outcome(self, chain: RunChain) -> None:
        state = chain.approval
        if state is None or state.state not in (ap.APPROVED, ap.DENIED):
            return
        for call in state.tool_calls:
            cid = call.get("tool_call_id")
            if cid:
                self._outcomes[str(cid)] = {"ok": state.state == ap.APPROVED, "why": state.reason}

    @property
    def outcomes(self) -> dict[str, tuple[bool, str | None]]:
        """Answers this view saw given (tool_call_id → (approved, reason))."""
        return {cid: (bool(o["ok"]), o["why"]) for cid, o in self._outcomes.items()}

    def _outcome(self, entry: Entry, answered: dict[str, dict[str, Any]]) -> Any:
        cid = entry.tool_call_id
        if not cid:
            return None
        return self._outcomes.get(cid) or answered.get(cid)

    def _answered(self, entries: list[Entry]) -> dict[str, dict[str, Any]]:
        from ..core.render import approval_outcomes

        return {
            cid: {"ok": ok, "why": why} for cid, (ok, why) in approval_outcomes(entries).items()
        }

    def _item(self, entry: Entry, outcome: Any) -> Item:
        item = entry_item(entry, self.tail)
        if outcome is not None and item["k"] == "ap":
            item["o"] = outcome
        return item

    # ---- rate (details tooltip only) --------------------------------------------------
    def note_rate(self, now: float, seq: int) -> None:
        prev = self._rate
        if prev is None or seq < prev[1]:
            self._rate = (now, seq)
            return
        elapsed = now - prev[0]
        if elapsed >= 1.0:
            self.rate = (seq - prev[1]) / elapsed
            self._rate = (now, seq)

    # ---- diffing ----------------------------------------------------------------------
    def reset(self) -> None:
        self._source = None
        self._mirror = []
        self._sealed = 0
        self._asks = []

    def pending_bytes(self, chain: RunChain) -> int:
        """About how many bytes of text the next diff would carry (cheap, no copies)."""
        entries = chain.transcript.entries
        count = len(entries)
        mirror = self._mirror
        total = 200 * max(0, count - len(mirror))
        for i in range(self._sealed, min(count, len(mirror))):
            total += max(0, len(entries[i].text) - mirror[i].size)
        return total

    def diff(self, chain: RunChain) -> tuple[list[Op], dict[str, Any], bool]:
        """(ops since the last diff, the header now, whether a person would see a change)."""
        transcript = chain.transcript
        ops: list[Op] = []
        if transcript is not self._source:
            had = bool(self._mirror)
            self.reset()
            self._source = transcript
            if had:
                ops.append(["r"])  # a different transcript: start the items over
        self._learn_outcome(chain)
        entries: list[Entry] = transcript.entries
        count = len(entries)  # read once: the reader thread may append meanwhile
        stopped = set(transcript.stop_reasons)
        answered = self._answered(entries) if self._asks or count > len(self._mirror) else {}
        mirror = self._mirror
        for i in range(self._sealed, count):
            entry = entries[i]
            outcome = self._outcome(entry, answered) if entry.kind == MT.APPROVAL_REQUEST else None
            if i >= len(mirror):
                item = self._item(entry, outcome)
                size = len(entry.text)
                mirror.append(_Mirror(item, size, _signature(entry, outcome)))
                if entry.kind == MT.APPROVAL_REQUEST:
                    self._asks.append(i)
                ops.append(["e", i, dict(item)])
                continue
            m = mirror[i]
            if entry.kind in STREAMED:
                grown = len(entry.text) - m.size
                if grown <= 0:
                    continue
                if self.tail is not None and grown > self.tail:
                    m.item = self._item(entry, None)
                    m.size = len(entry.text)
                    ops.append(["e", i, dict(m.item)])
                    continue
                size, piece = text_since(entry.text, m.size)
                m.size = size
                if piece:
                    ops.append(["a", i, piece])
                    _append(m.item, piece, self.tail)
                continue
            sig = _signature(entry, outcome)
            if sig != m.sig:
                m.sig = sig
                m.size = len(entry.text)
                m.item = self._item(entry, outcome)
                ops.append(["e", i, dict(m.item)])
        for i in self._asks:  # an answer may come long after its request sealed
            if i < self._sealed:
                entry = entries[i]
                outcome = self._outcome(entry, answered or self._answered(entries))
                sig = _signature(entry, outcome)
                if sig != mirror[i].sig:
                    mirror[i].sig = sig
                    mirror[i].item = self._item(entry, outcome)
                    ops.append(["e", i, dict(mirror[i].item)])
        # Entries of runs that have their stop_reason never change again (approval requests
        # excepted, see above): later diffs skip them.
        seal = self._sealed
        while seal < len(mirror) and entries[seal].run_id in stopped:
            seal += 1
        self._sealed = seal
        header = build_header(
            chain,
            self.agent,
            entries=entries,
            rate=self.rate,
            note=self.note,
            conversation=self.conversation,
        )
        visible = visible_change(self.header or None, header)
        self.header = header
        return ops, header, visible

    def message(self, ops: list[Op], header: dict[str, Any] | None) -> dict[str, Any]:
        """The next numbered message for these ops (and header)."""
        self.n += 1
        msg: dict[str, Any] = {"t": "d", "n": self.n, "o": ops}
        if header is not None:
            msg["h"] = header
        return msg

    def snapshot(self) -> dict[str, Any]:
        """The whole document as the browser has it after message `n`."""
        return {
            "v": PROTOCOL,
            "n": self.n,
            "tl": self.tail,
            "h": self.header,
            "e": [m.item for m in self._mirror],
        }


def _append(item: Item, piece: str, tail: int | None) -> None:
    """Append streamed text to an item, keeping its last `tail` characters (as the browser)."""
    text = item.get("x", "") + piece
    if tail and len(text) > tail:
        item["c"] = item.get("c", 0) + len(text) - tail
        text = text[-tail:]
    item["x"] = text


# ---- the reference browser ------------------------------------------------------------------
def empty_doc(tail: int | None = None) -> dict[str, Any]:
    return {"v": PROTOCOL, "n": 0, "tl": tail, "h": {}, "e": []}


def apply_message(doc: dict[str, Any], msg: Mapping[str, Any]) -> bool:
    """Apply one message to a document as the browser does; False if it was not next in line
    (an old one is ignored; after a gap the browser asks for the document instead)."""
    if msg.get("t") == "doc":
        new = msg["doc"]
        if new["n"] < doc["n"]:
            return False
        doc.clear()
        doc.update(copy.deepcopy(new))
        return True
    if msg["n"] != doc["n"] + 1:
        return False
    items: list[Item] = doc["e"]
    tail = doc.get("tl")
    for op in msg.get("o", ()):
        if op[0] == "r":
            items.clear()
        elif op[0] == "e":
            i, item = op[1], copy.deepcopy(op[2])
            if i == len(items):
                items.append(item)
            else:
                items[i] = item
        elif op[0] == "a":
            _append(items[op[1]], op[2], tail)
    if "h" in msg:
        doc["h"] = msg["h"]
    doc["n"] = msg["n"]
    return True


# ---- wire encoding --------------------------------------------------------------------------
def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_doc(doc: Mapping[str, Any]) -> bytes:
    """The `snapshot` trait: the document as deflated JSON (the browser inflates it)."""
    return zlib.compress(dumps(doc), 6)


def decode_doc(data: bytes | memoryview) -> dict[str, Any]:
    raw = bytes(data)
    if not raw:
        return empty_doc()
    doc: dict[str, Any] = json.loads(zlib.decompress(raw))
    return doc


def encode_message(msg: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """(content, buffers) of a message: small ones as JSON, larger ones deflated in a buffer
    (`{"t": "d", "n": N, "z": 1}` + the deflated JSON of the whole message)."""
    body = dumps(msg)
    if len(body) >= COMPRESS_FROM:
        packed = zlib.compress(body, 6)
        if len(packed) < 0.8 * len(body):
            return {"t": msg["t"], "n": msg.get("n"), "z": 1}, [packed]
    return msg, []


def decode_message(content: Mapping[str, Any], buffers: list[Any] | None) -> dict[str, Any]:
    if content.get("z") and buffers:
        msg: dict[str, Any] = json.loads(zlib.decompress(bytes(buffers[0])))
        return msg
    return dict(content)


# ---- when to send ---------------------------------------------------------------------------
class Batcher:
    """When the next message may go out (all times from the view's clock).

    * a visible change (status, approval, warning, error, controls): now;
    * streamed text: once it is worth its envelope (`worth` bytes), or has waited `max_wait`;
    * the first change after `max_wait` without text sent: now (a resumed run's next frame);
    * never sooner than `1 / max_hz` after the previous message with text (a header-only
      message, e.g. a status change, does not use up the window).
    """

    def __init__(
        self, max_hz: float = 10.0, *, max_wait: float = 1.0, worth: int = 4 * ENVELOPE
    ) -> None:
        if max_hz <= 0:
            raise ValueError("max_hz must be positive")
        self.min_interval = 1.0 / max_hz
        self.max_wait = max(max_wait, self.min_interval)
        self.worth = worth
        self.last_sent = float("-inf")
        self.pending_since: float | None = None

    def mark(self, now: float) -> None:
        """Something changed (a frame arrived)."""
        if self.pending_since is None:
            self.pending_since = now

    def sent(self, now: float, *, data: bool = True) -> None:
        """A message went out; one with only a header change does not use up the window."""
        if data:
            self.last_sent = now
        self.pending_since = None

    def clear(self) -> None:
        """Looked, nothing to send: the window is not used up."""
        self.pending_since = None

    def due_in(self, now: float, *, urgent: bool, pending_bytes: int) -> float | None:
        """Seconds until a message should go out; None when nothing is pending."""
        if not urgent and self.pending_since is None:
            return None
        floor = self.last_sent + self.min_interval
        if urgent or pending_bytes >= self.worth or now - self.last_sent >= self.max_wait:
            return max(0.0, floor - now)
        assert self.pending_since is not None
        return max(0.0, floor - now, self.pending_since + self.max_wait - now)
