"""RunView: one anywidget model per run chain. Python decides, the browser only displays.

The view reads the chain only through `letta_nb._protocols.RunChain`. Its listener (called from
the reader thread) only marks the view dirty; a pump (`pump.py`, one thread for all views)
flushes it when `doc.Batcher` says so, always inside the starting cell's context, so updates
never land in another cell. A flush sends one custom message of append-only ops
(`doc.ViewDoc`); the `snapshot` trait (the whole document, deflated) is refreshed only when the
chain settles, so a page reload or a saved notebook shows the result without a trait re-sent on
every frame. When the chain is over its display is updated once (`display_id`), so the saved
`.ipynb` and nbconvert's HTML hold the final transcript as escaped static HTML.

Wire protocol, both ways: see `doc.py` and `static/run_view.js`. Clicks (Approve / Deny /
Cancel / Detach) arrive as custom messages on the kernel's shell thread; the network work of a
cancel goes to a worker thread so a slow server never freezes the notebook.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from .. import _kernel
from ..core.errors import LettaNbError
from ..core.render import header_text, render_html
from ..core.status import OVER, SETTLED
from .doc import Batcher, ViewDoc, decode_doc, encode_doc, encode_message
from .doc_view import DocView
from .module import LOADER, packed, source
from .pump import InlinePump, ThreadPump, shared_pump

if TYPE_CHECKING:
    from .._protocols import RunChain

#: The text/html copy (saved notebooks, nbconvert) keeps this many last characters a message.
STATIC_TAIL = 20_000
#: Header details (seq, frames/s, active seconds) ride along at most this often.
HEADER_EVERY = 2.0

#: The newest view per cell key: re-running a cell retires the view it showed before.
_views_by_key: dict[str, weakref.ref[RunView]] = {}
_views_lock = threading.Lock()

_LOADER = LOADER
#: The run view's files in `static/`.
JS_FILES = ("common.js", "markdown.js", "run_view.js")
CSS_FILES = ("theme.css", "markdown.css", "run_view.css")


def module_source(*, readable: bool = False) -> str:
    """The view's ES module: `static/run_view.js` with the theme and `run_view.css` inlined
    (comments and indentation stripped unless `readable`)."""
    return source(JS_FILES, CSS_FILES, readable=readable)


def packed_module() -> bytes:
    """The module, deflated: it travels once per view (and per page reload) as `_module`."""
    return packed(JS_FILES, CSS_FILES)


def esm() -> str:
    return _LOADER


_layout: widgets.Layout | None = None


def _shared_layout() -> widgets.Layout:
    """One Layout for every run view: each would otherwise open a comm of its own."""
    global _layout
    if _layout is None or getattr(_layout, "comm", None) is None:
        _layout = widgets.Layout()
    return _layout


def _chain_of(source: Any) -> RunChain:
    """A RunHandle carries its chain in `.follower`; a chain is used as is."""
    inner = getattr(source, "follower", None)
    chain: RunChain = inner if inner is not None else source
    return chain


def _agent_name(source: Any) -> str | None:
    name = getattr(source, "agent_name", None)
    return name if isinstance(name, str) and name else None


def _conversation_label(source: Any) -> str | None:
    label = getattr(source, "conversation_label", None)
    return label if isinstance(label, str) and label else None


class RunView(DocView):
    """The live view of a RunHandle or a RunChain."""

    _esm = traitlets.Unicode(_LOADER).tag(sync=True)
    #: The browser module (`module_source()`), deflated; `_esm` loads it.
    _module = traitlets.Bytes(packed_module()).tag(sync=True)
    #: The whole document (deflated JSON): what a new browser view renders first.
    snapshot = traitlets.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        source: Any,
        *,
        agent: str | None = None,
        tail_chars: int | None = 4000,
        max_hz: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        pump: ThreadPump | InlinePump | None = None,
        key: str | None = None,
    ) -> None:
        self.source = source
        self.chain = _chain_of(source)
        self.key = key
        self.agent = agent or _agent_name(source)
        self._clock = clock
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self.conversation = _conversation_label(source)
        self._doc = ViewDoc(
            tail=tail_chars or None, agent=self.agent, conversation=self.conversation
        )
        self._batch = Batcher(max_hz)
        self._pump = pump if pump is not None else shared_pump()
        self._pump_keeps = isinstance(self._pump, ThreadPump)
        self._context = _kernel.ParentContext()
        self._urgent = False
        self._done = False
        self._flushing = False
        self._header_at = clock()  # the snapshot carries the header
        self._display_id: str | None = None
        self._shown_status: str | None = None  # the status the displayed text/html shows
        self.flushes = 0
        _ops, header, _visible = self._doc.diff(self.chain)  # what is known now: the document
        self._status = header["st"]
        self._snapshot_n = 0
        super().__init__(snapshot=encode_doc(self._doc.snapshot()), layout=_shared_layout())
        self.on_msg(self._on_msg)
        ref = weakref.ref(self)

        def listener(_chain: Any) -> None:
            view = ref()
            if view is not None:
                view.notify()

        self._listener = listener
        self.chain.add_listener(listener)
        self.notify()  # catch changes between the first diff and add_listener
        if key is not None:
            self._retire_previous(key)

    def _retire_previous(self, key: str) -> None:
        with _views_lock:
            old_ref = _views_by_key.get(key)
            _views_by_key[key] = weakref.ref(self)
        old = old_ref() if old_ref is not None else None
        if old is not None and old is not self:
            old.close()  # its output was replaced by the re-run; stop feeding it

    # ---- what a new view and a saved notebook get --------------------------------------

    def __repr__(self) -> str:
        # nbval compares text/plain: nothing random or time-dependent
        return f"<letta_nb run view: agent {self.agent}>" if self.agent else "<letta_nb run view>"

    def static_html(self) -> str:
        """Escaped static HTML of the chain as it is now (saved notebooks, nbconvert)."""
        chain = self.chain
        header = header_text(
            self.agent or chain.agent_id,
            str(chain.status),
            chain.active_seconds,
            chain.transcript.total_tokens(),
            conversation=self.conversation
            or (chain.conversation_id[:13] if chain.conversation_id else None),
        )
        with self._lock:
            error = self._doc.header.get("err")
            outcomes = self._doc.outcomes
        return render_html(
            chain.transcript, tail=STATIC_TAIL, header=header, error=error, outcomes=outcomes
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            with contextlib.suppress(Exception):  # a static copy never breaks the live view
                data["text/html"] = self.static_html()
        return bundle

    # ---- pump protocol -----------------------------------------------------------------
    def notify(self) -> None:
        """From the reader thread after a change: mark pending, wake the pump.

        A chain that just settled is flushed right here, before the reader marks it settled:
        whoever `wait()`s for it (a later cell, nbclient executing it) sees the final state
        published while that cell still runs.
        """
        status = self.chain.status
        if self._batch.pending_since is not None and status == self._status and self._pump_keeps:
            return  # already pending; the pump thread keeps the view until it flushes
        with self._lock:
            self._batch.mark(self._clock())
            settling = status != self._status and status in SETTLED
            if status != self._status:
                self._urgent = True
            done = self._done
        if settling and not done:
            self._run_flush()
            return
        self._pump.wake(self)

    def due_in(self) -> float | None:
        with self._lock:
            if self._done:
                return None
            pending = self._batch.pending_since is not None
            size = self._doc.pending_bytes(self.chain) if pending else 0
            return self._batch.due_in(self._clock(), urgent=self._urgent, pending_bytes=size)

    # ---- flushing ----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what changed since the last flush (one message), refresh the snapshot and the
        saved display when the chain settles."""
        chain = self.chain
        with self._lock:
            now = self._clock()
            self._batch.clear()  # before reading the chain: a frame now marks a new batch
            self._urgent = False
            self._doc.note_rate(now, chain.last_seq)
            ops, header, visible = self._doc.diff(chain)
            status = header["st"]
            changed = status != self._status
            self._status = status
            send_header = visible or changed or now - self._header_at >= HEADER_EVERY
            if ops or send_header:
                msg = self._doc.message(ops, header if send_header else None)
                if send_header:
                    self._header_at = now
                content, buffers = encode_message(msg)
                self.send(content, buffers)
                self._batch.sent(now, data=bool(ops))
            fresh = status in SETTLED and self._snapshot_n != self._doc.n
            if fresh:
                self._snapshot_n = self._doc.n
                self.snapshot = encode_doc(self._doc.snapshot())
            over = status in OVER and self._shown_status != status and self._display_id
            if over:
                self._shown_status = status
            self.flushes += 1
        if fresh or over:
            # nbclient (and so every notebook it saves) records only the messages of the cell
            # it executes now: publish the final state on that cell too, or the saved copy
            # would keep the first frame. The browser dedupes (same document number).
            contextvars.Context().run(self._publish_on_executing_cell, bool(fresh), bool(over))

    # ---- clicks ------------------------------------------------------------------------
    def _on_msg(self, _widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("t")
        if kind == "sync":
            self._send_document()
        elif kind == "answer":
            reason = content.get("reason")
            self.answer(bool(content.get("approve")), str(reason) if reason else None)
        elif kind == "cancel":
            self._cancel_in_background()
        elif kind == "detach":
            self.detach()

    def _set_note(self, text: str | None) -> None:
        with self._lock:
            self._doc.note = text
            self._urgent = True
        self._pump.wake(self)

    def answer(self, approve: bool, reason: str | None = None) -> None:
        """Approve / Deny: the chain claims the single answer and starts the new run."""
        try:
            self.chain.answer(approve, reason)
        except LettaNbError as err:
            self._set_note(f"could not send the answer: {err}")
            return
        self._set_note(None)

    def _cancel_in_background(self) -> threading.Thread:
        self._set_note("cancelling…")
        ctx = contextvars.copy_context()  # the click's own parent message
        worker = threading.Thread(
            target=ctx.run, args=(self.cancel,), name="letta-nb-cancel", daemon=True
        )
        worker.start()
        return worker

    def cancel(self) -> None:
        """Cancel the run on the server (the chain then reads its final frames)."""
        try:
            result = self.chain.cancel()
        except LettaNbError as err:
            self._set_note(str(err))
            return
        self._set_note(None if result in (None, "", "cancelled") else f"cancel: {result}")

    def detach(self) -> None:
        """Stop following here only; the run keeps going on the server."""
        self.chain.detach()
        self._set_note(None)

    def close(self) -> None:
        with self._lock:
            self._done = True
        self._pump.remove(self)
        self.chain.remove_listener(self._listener)
        super().close()


def read_snapshot(view: RunView) -> dict[str, Any]:
    """The document held by the `snapshot` trait (what a new browser view starts from)."""
    return decode_doc(view.snapshot)
