"""BatchView: the live view of a batch — counts, progress, the inbox, one item's run view.

Like `RunView`, Python decides and the browser displays: the runner's listener only marks the
view dirty; the shared pump flushes it when `doc.Batcher` allows (at most `max_hz` messages a
second whatever the number of items: a message carries only the rows that changed, see
`batch_doc.py`). A click on a row opens that item's `RunView` inside this view (the `detail`
trait: a child widget the browser module renders in place); Approve / Deny (one item or all),
Cancel and Retry arrive as custom messages, and their network work runs on a worker thread.
When the batch is done its display is updated once, so a saved notebook shows the final counts
and the result table as static HTML.
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
from ..batch.state import BATCH_SETTLED
from ..core.errors import LettaNbError
from .batch_doc import BatchDoc
from .doc import Batcher, decode_doc, encode_doc, encode_message
from .doc_view import DocView
from .module import LOADER, packed
from .pump import InlinePump, ThreadPump, shared_pump
from .run_view import RunView, _shared_layout

if TYPE_CHECKING:
    from ..batch import Batch

JS_FILES = ("common.js", "table_common.js", "markdown.js", "batch_view.js")
CSS_FILES = ("theme.css", "table_common.css", "markdown.css", "batch_view.css")
HEADER_EVERY = 2.0


def packed_module() -> bytes:
    return packed(JS_FILES, CSS_FILES)


class BatchView(DocView):
    """The live view of a `Batch`."""

    display_prefix = "letta-nb-batch"

    _esm = traitlets.Unicode(LOADER).tag(sync=True)
    _module = traitlets.Bytes(packed_module()).tag(sync=True)
    snapshot = traitlets.Bytes(b"").tag(sync=True)
    #: The item run view shown under the table (a click on a row), or None.
    detail = traitlets.Instance(widgets.DOMWidget, allow_none=True).tag(
        sync=True, **widgets.widget_serialization
    )

    def __init__(
        self,
        batch: Batch,
        *,
        max_hz: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        pump: ThreadPump | InlinePump | None = None,
    ) -> None:
        self.batch = batch
        self._clock = clock
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self._doc = BatchDoc()
        self._batch = Batcher(max_hz, max_wait=0.5, worth=0)
        self._pump = pump if pump is not None else shared_pump()
        self._context = _kernel.ParentContext()
        self._urgent = False
        self._done = False
        self._flushing = False
        self._header_at = clock()
        self._display_id: str | None = None
        self._shown_status: str | None = None
        self._snapshot_n = -1
        self.flushes = 0
        _ops, header, _visible = self._doc.diff(batch)
        self._status = header["st"]
        super().__init__(
            snapshot=encode_doc(self._doc.snapshot()), layout=_shared_layout(), detail=None
        )
        self._snapshot_n = self._doc.n
        self.on_msg(self._on_msg)
        ref = weakref.ref(self)

        def listener(_runner: Any) -> None:
            view = ref()
            if view is not None:
                view.notify()

        self._listener = listener
        batch.runner.add_listener(listener)
        self.notify()

    def __repr__(self) -> str:
        return f"<letta_nb batch view: {len(self.batch)} items>"

    # ---- display and the saved copy ----------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            with contextlib.suppress(Exception):  # a static copy never breaks the live view
                data["text/html"] = self.batch.static_html()
                data["text/plain"] = f"batch {self.batch.status} · {self.batch.summary()}"
        return bundle

    # ---- pump protocol -----------------------------------------------------------------
    def notify(self) -> None:
        """From the runner thread after a change: mark pending, wake the pump. A batch that
        is done is flushed here (`wait()` returns after the final state went out); another
        status change too, when the rate allows."""
        status = self.batch.status
        with self._lock:
            if self._done:
                return
            now = self._clock()
            self._batch.mark(now)
            finished = status != self._status and status == "done"
            if status != self._status:
                self._urgent = True
            due = self._batch.due_in(now, urgent=True, pending_bytes=0) == 0
        if finished or (self._urgent and due):
            self._run_flush()
            return
        self._pump.wake(self)

    def due_in(self) -> float | None:
        with self._lock:
            if self._done:
                return None
            return self._batch.due_in(self._clock(), urgent=self._urgent, pending_bytes=0)

    def flush(self) -> None:
        """Send what changed (one message); refresh the snapshot and the saved display when
        the batch settles."""
        with self._lock:
            now = self._clock()
            self._batch.clear()
            self._urgent = False
            ops, header, visible = self._doc.diff(self.batch)
            status = header["st"]
            self._status = status
            send_header = visible or now - self._header_at >= HEADER_EVERY
            if ops or send_header:
                msg = self._doc.message(ops, header if send_header else None)
                if send_header:
                    self._header_at = now
                content, buffers = encode_message(msg)
                self.send(content, buffers)
                self._batch.sent(now, data=bool(ops))
            fresh = status in BATCH_SETTLED and self._snapshot_n != self._doc.n
            if fresh:
                self._snapshot_n = self._doc.n
                self.snapshot = encode_doc(self._doc.snapshot())
            over = status == "done" and self._shown_status != status and self._display_id
            if over:
                self._shown_status = status
            self.flushes += 1
        if fresh or over:
            contextvars.Context().run(self._publish_on_executing_cell, bool(fresh), bool(over))

    # ---- clicks ------------------------------------------------------------------------
    def _on_msg(self, _widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("t")
        if kind == "sync":
            self._send_document()
        elif kind == "open":
            pos = content.get("i")
            if isinstance(pos, int) and 0 <= pos < len(self.batch):
                at: int = pos
                self._in_background(lambda: self._open(at))
        elif kind == "close":
            self.close_item()
        elif kind == "answer":
            pos = content.get("i")
            reason = content.get("reason")
            approve = bool(content.get("approve"))
            self._in_background(
                lambda: self.answer(
                    pos if isinstance(pos, int) else None, approve, str(reason) if reason else None
                )
            )
        elif kind == "cancel":
            self._in_background(self.cancel)
        elif kind == "retry":
            self._in_background(self.retry)

    def _in_background(self, job: Callable[[], None]) -> threading.Thread:
        ctx = contextvars.copy_context()  # the click's own parent message
        worker = threading.Thread(
            target=ctx.run, args=(job,), name="letta-nb-batch-click", daemon=True
        )
        worker.start()
        return worker

    def _set_note(self, text: str | None) -> None:
        with self._lock:
            self._doc.note = text
            self._urgent = True
            self._batch.mark(self._clock())
        self._pump.wake(self)

    def _open(self, pos: int) -> None:
        self.open_item(pos)

    def open_item(self, pos: int) -> RunView | None:
        """Show item `pos`'s run view under the table (a finished item is read again)."""
        try:
            chain = self.batch.chain_at(pos)
        except LettaNbError as err:
            self._set_note(str(err))
            return None
        view = RunView(chain, agent=self.batch.agent_name, key=f"{self.batch.key}\0detail")
        with self._lock:
            self._doc.open = pos
        self.detail = view
        self._set_note(None)
        return view

    def close_item(self) -> None:
        old = self.detail
        self.detail = None
        with self._lock:
            self._doc.open = None
        if isinstance(old, RunView):
            old.close()
        self._set_note(None)

    def answer(self, pos: int | None, approve: bool, reason: str | None) -> None:
        """Approve / Deny one waiting item (`pos`) or all of them (`None`)."""
        try:
            self.batch.runner.answer(None if pos is None else [pos], approve, reason)
        except LettaNbError as err:
            self._set_note(f"could not send the answer: {err}")
            return
        self._set_note(None)

    def cancel(self) -> None:
        self._set_note("cancelling…")
        try:
            self.batch.cancel()
        except LettaNbError as err:
            self._set_note(str(err))
            return
        self._set_note(None)

    def retry(self) -> None:
        count = self.batch.retry()
        self._set_note(f"sending {count} item{'s' if count != 1 else ''} again" if count else None)

    def close(self) -> None:
        with self._lock:
            self._done = True
        self._pump.remove(self)
        self.batch.runner.remove_listener(self._listener)
        old = self.detail
        if isinstance(old, RunView):
            old.close()
        super().close()


def read_snapshot(view: BatchView) -> dict[str, Any]:
    return decode_doc(view.snapshot)
