"""DocView: what the run view and the batch view share as document-backed anywidgets.

Each view keeps a document (`doc.ViewDoc`, `batch_doc.BatchDoc`) that the browser mirrors: a
`snapshot` trait (what a new view starts from) plus numbered messages of changes. This base
holds the parts that do not depend on what the document shows: the display with a
`display_id` (updated once when the view is over, so a saved notebook holds the result), the
pump protocol's flush entry points, publishing the final state on the executing cell, and the
answer to a browser's `sync`. Subclasses set up the state in `__init__` (see the annotations)
and implement `flush()`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import anywidget

from .. import _kernel
from .doc import Batcher, encode_message


class DocView(anywidget.AnyWidget):
    """The base of `RunView` and `BatchView` (not displayed by itself)."""

    #: Prefix of the display id (`<prefix>-<uuid>`).
    display_prefix = "letta-nb"

    _clock: Callable[[], float]
    _lock: threading.RLock
    _run_lock: threading.Lock
    _context: _kernel.ParentContext
    _batch: Batcher
    _doc: Any
    _done: bool
    _flushing: bool
    _urgent: bool
    _status: str
    _shown_status: str | None
    _display_id: str | None

    def flush(self) -> None:
        raise NotImplementedError

    def due_in(self) -> float | None:
        raise NotImplementedError

    # ---- what a new view and a saved notebook get --------------------------------------
    @property
    def document(self) -> dict[str, Any]:
        """The document the browser shows now (decoded `snapshot` + the messages since)."""
        with self._lock:
            snapshot: dict[str, Any] = self._doc.snapshot()
            return snapshot

    def _bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle: Any = self._repr_mimebundle_()
        if isinstance(bundle, tuple):
            return bundle[0], bundle[1]
        return bundle, {}

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Display with a display_id, so the output can show the final state later."""
        from IPython.display import display

        if self._display_id is None:
            self._display_id = f"{self.display_prefix}-{uuid.uuid4().hex}"
        with self._lock:
            self._shown_status = self._status
        data, metadata = self._bundle()
        display(data, metadata=metadata, raw=True, display_id=self._display_id)

    def _update_display(self) -> None:
        """Once the view is over: the output's text/html becomes the final static copy."""
        if self._display_id is None:
            return
        from IPython.display import update_display

        data, metadata = self._bundle()
        update_display(data, metadata=metadata, raw=True, display_id=self._display_id)

    # ---- pump protocol -----------------------------------------------------------------
    def _run_flush(self) -> None:
        """Flush in the starting cell's context (one thread at a time may enter it)."""
        with self._run_lock:
            self._context.run(self.flush)

    def pump_tick(self) -> None:
        with self._lock:
            if self._done or self._flushing:
                return
            due = self.due_in()
            if due is None or due > 0:
                return
            self._flushing = True
        try:
            self._run_flush()
        finally:
            with self._lock:
                self._flushing = False

    def _publish_on_executing_cell(self, snapshot: bool, display: bool) -> None:
        """nbclient (and so every notebook it saves) records only the messages of the cell it
        executes now: publish the final state on that cell too, or the saved copy would keep
        the first frame. The browser dedupes (same document number)."""
        if snapshot and _kernel.parent_msg_id(_kernel.current_parent()) not in (
            None,
            self._context.msg_id,
        ):
            self.send_state("snapshot")
        if display:
            self._update_display()

    def _send_document(self) -> None:
        """The answer to a browser view's `sync`: the whole document as it is now."""
        with self._lock:
            doc = self._doc.snapshot()
        body, bufs = encode_message({"t": "doc", "n": doc["n"], "doc": doc})
        self.send(body, bufs)
