"""DashboardView: `%letta dashboard`, a live table of this kernel's runs and batches and of the
server's active runs, with attach and cancel per row.

One thread per dashboard refreshes it: this kernel's rows every `every` seconds (memory only),
the server's active runs every `server_every` seconds (one bounded REST call; a failure is one
line in the header, the kernel's rows go on). A message goes out only when a row changed, at
most once per refresh. Attach opens the row's view inside the dashboard (the `detail` trait:
a `RunView`, or the `BatchView` of a batch); cancel works on the server (a worker thread).
Only one dashboard per kernel is live: showing a new one closes the previous one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anywidget
import ipywidgets as widgets
import traitlets

from .. import _kernel
from ..core.clock import SYSTEM, Clock
from ..core.errors import LettaNbError
from ..core.render import one_line
from .dash_doc import STALL_AFTER, DashDoc, Row, kernel_rows, server_rows
from .doc import decode_doc, encode_doc, encode_message
from .module import LOADER, packed
from .run_view import RunView, _shared_layout

if TYPE_CHECKING:
    from ..session import Session

JS_FILES = ("common.js", "table_common.js", "dashboard.js")
CSS_FILES = ("theme.css", "table_common.css", "dashboard.css")
#: Server runs listed at most (the newest active ones).
SERVER_LIMIT = 50

_live: weakref.ref[DashboardView] | None = None
_live_lock = threading.Lock()


class DashboardView(anywidget.AnyWidget):
    """The live dashboard of one session."""

    _esm = traitlets.Unicode(LOADER).tag(sync=True)
    _module = traitlets.Bytes(packed(JS_FILES, CSS_FILES)).tag(sync=True)
    snapshot = traitlets.Bytes(b"").tag(sync=True)
    detail = traitlets.Instance(widgets.DOMWidget, allow_none=True).tag(
        sync=True, **widgets.widget_serialization
    )

    def __init__(
        self,
        session: Session,
        *,
        stall_after: float = STALL_AFTER,
        every: float = 1.0,
        server_every: float = 3.0,
        clock: Clock = SYSTEM,
        start: bool = True,
    ) -> None:
        self.session = session
        self.stall_after = stall_after
        self.every = every
        self.server_every = server_every
        self.clock = clock
        self._doc = DashDoc()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._context = _kernel.ParentContext()
        self._server_runs: list[dict[str, Any]] = []
        self._server_error: str | None = None
        self._server_at: float | None = None
        self._note: str | None = None
        self._open: str | None = None
        self._display_id: str | None = None
        self.refreshes = 0
        self.refresh(server=start)
        super().__init__(
            snapshot=encode_doc(self._doc.snapshot()), layout=_shared_layout(), detail=None
        )
        self.on_msg(self._on_msg)
        self._thread: threading.Thread | None = None
        self._retire_previous()
        if start:
            ctx = contextvars.copy_context()
            self._thread = threading.Thread(
                target=ctx.run, args=(self._loop,), name="letta-nb-dashboard", daemon=True
            )
            self._thread.start()

    def _retire_previous(self) -> None:
        global _live
        with _live_lock:
            old = _live() if _live is not None else None
            _live = weakref.ref(self)
        if old is not None and old is not self:
            old.close()

    def __repr__(self) -> str:
        return "<letta_nb dashboard>"

    @property
    def document(self) -> dict[str, Any]:
        with self._lock:
            return self._doc.snapshot()

    # ---- refreshing --------------------------------------------------------------------
    def _loop(self) -> None:
        last_server = self.clock.monotonic()
        while not self.clock.wait(self._stop, self.every):
            now = self.clock.monotonic()
            server = now - last_server >= self.server_every
            if server:
                last_server = now
            try:
                self._context.run(functools.partial(self.refresh, server=server, send=True))
            except Exception as exc:  # a dashboard never dies of one bad refresh
                with self._lock:
                    self._note = f"refresh failed: {type(exc).__name__}: {one_line(str(exc))}"

    def _fetch_server(self) -> None:
        try:
            runs = self.session.backend.list_runs(active=True, limit=SERVER_LIMIT)
        except LettaNbError as exc:
            self._server_error = one_line(str(exc))
            return
        self._server_runs = runs
        self._server_error = None
        self._server_at = time.time()

    def rows(self) -> list[Row]:
        local = kernel_rows(self.session, stall_after=self.stall_after)
        known = {r.run_id for r in local if r.run_id}
        for batch in self.session.batches():
            for item in batch.items:
                known.update(item.runs)
        ids = {str(r.get("agent_id")) for r in self._server_runs if r.get("agent_id")}
        names = {a: self.session.agent_name(a) for a in ids}
        return local + server_rows(self._server_runs, known, names, time.time())

    def header(self, rows: list[Row]) -> dict[str, Any]:
        header: dict[str, Any] = {
            "url": self.session.backend.base_url,
            "stall": self.stall_after,
            "live": sum(1 for r in rows if r.live and r.kind != "item"),
            "stalled": sum(1 for r in rows if r.stalled),
            "server": sum(1 for r in rows if r.kind == "server"),
        }
        if self._server_error:
            header["err"] = self._server_error
        if self._server_at:
            header["at"] = round(self._server_at, 1)
        if self._note:
            header["note"] = self._note
        if self._open:
            header["open"] = self._open
        return header

    def refresh(self, *, server: bool = False, send: bool = False) -> None:
        """Rebuild the rows (and ask the server with `server`); send what changed."""
        if server:
            self._fetch_server()
        rows = self.rows()
        with self._lock:
            ops, changed = self._doc.diff(rows, self.header(rows))
            self.refreshes += 1
            if send and changed and not self._stop.is_set():
                content, buffers = encode_message(self._doc.message(ops, self._doc.header))
                self.send(content, buffers)

    # ---- display -----------------------------------------------------------------------
    def static_html(self) -> str:
        from ..tables import dashboard_html

        with self._lock:
            rows = [self._doc.rows[i] for i in self._doc.order]
        return dashboard_html(rows, url=self.session.backend.base_url)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            with contextlib.suppress(Exception):  # a static copy never breaks the live view
                data["text/html"] = self.static_html()
        return bundle

    def _ipython_display_(self, **kwargs: Any) -> None:
        from IPython.display import display

        self._display_id = self._display_id or f"letta-nb-dashboard-{uuid.uuid4().hex}"
        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        display(data, metadata=metadata, raw=True, display_id=self._display_id)

    # ---- clicks ------------------------------------------------------------------------
    def _on_msg(self, _widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("t")
        if kind == "sync":
            with self._lock:
                doc = self._doc.snapshot()
            body, bufs = encode_message({"t": "doc", "n": doc["n"], "doc": doc})
            self.send(body, bufs)
        elif kind in ("attach", "cancel"):
            row_id = content.get("id")
            if isinstance(row_id, str):
                job = self.attach if kind == "attach" else self.cancel
                self._in_background(lambda: job(row_id))
        elif kind == "close":
            self.close_detail()

    def _in_background(self, job: Callable[[], object]) -> threading.Thread:
        ctx = contextvars.copy_context()
        worker = threading.Thread(
            target=ctx.run, args=(job,), name="letta-nb-dashboard-click", daemon=True
        )
        worker.start()
        return worker

    def _target(self, row_id: str) -> Row | None:
        with self._lock:
            return self._doc.targets.get(row_id)

    def _say(self, text: str | None) -> None:
        with self._lock:
            self._note = text
        self.refresh(send=True)

    def attach(self, row_id: str) -> Any:
        """Open the row's live view under the table."""
        from ..batch import Batch
        from .batch_view import BatchView

        row = self._target(row_id)
        if row is None:
            self._say("that row is gone")
            return None
        try:
            view: Any
            if isinstance(row.target, Batch):
                view = BatchView(row.target)
            elif row.kind == "server":
                handle = self.session.attach(str(row.run_id))
                view = RunView(handle, key="letta-nb-dashboard\0detail")
            else:
                view = RunView(row.target, agent=row.agent, key="letta-nb-dashboard\0detail")
        except LettaNbError as exc:
            self._say(str(exc))
            return None
        old = self.detail
        self.detail = view
        if isinstance(old, BatchView) and old is not view:
            old.close()
        with self._lock:  # an attached server run is this kernel's run row from now on
            self._open = f"run:{row.run_id}" if row.kind == "server" else row_id
        self._say(None)
        return view

    def cancel(self, row_id: str) -> None:
        """Cancel the row's run (or batch) on the server."""
        from ..batch import Batch

        row = self._target(row_id)
        if row is None:
            self._say("that row is gone")
            return
        self._say("cancelling…")
        try:
            if isinstance(row.target, Batch):
                row.target.cancel()
                result = "cancelled"
            elif row.kind == "server":
                run = row.target
                agent_id = str(run.get("agent_id"))
                result = self.session.backend.cancel(agent_id, [str(row.run_id)]).get(
                    str(row.run_id), "cancelled"
                )
            else:
                result = row.target.cancel()
        except LettaNbError as exc:
            self._say(str(exc))
            return
        self._say(None if result in (None, "", "cancelled") else f"cancel: {result}")
        self.refresh(server=True, send=True)

    def close_detail(self) -> None:
        old = self.detail
        self.detail = None
        with self._lock:
            self._open = None
        if old is not None:
            old.close()
        self.refresh(send=True)

    def close(self) -> None:
        self._stop.set()
        old = self.detail
        if old is not None:
            old.close()
        super().close()


def read_snapshot(view: DashboardView) -> dict[str, Any]:
    return decode_doc(view.snapshot)
