"""RunView: the live view of one run chain. It displays; the follower does everything else.

Layout: header (agent, run, status, elapsed, seq, frames/s, warning), the transcript (sealed
messages in one HTML widget, live ones in segments: transcript_view.py), the approval card (built
on first need) and Cancel / Detach (not built for a chain that is already over). All widgets
share one Layout and one style per class (shared.py). The follower's listener only marks the
view dirty; a pump flushes at most `max_hz` times a second, at once on a status change, and
always inside the starting cell's context so updates never land in another cell. The display
bundle carries a text/html snapshot of the transcript next to the widget, for saved notebooks.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .. import _kernel
from ..core.errors import LettaNbError
from ..core.render import render_html
from ..core.status import LIVE as ACTIVE
from ..core.status import OVER as FINAL
from ..core.throttle import Throttle
from .approval import ApprovalCard
from .header import header_html
from .pump import InlinePump, ThreadPump, shared_pump
from .shared import Shared
from .transcript_view import TranscriptView

#: The newest view per cell key: re-running a cell retires the view it showed before.
_views_by_key: dict[str, weakref.ref[RunView]] = {}
_views_lock = threading.Lock()

#: While a run is live the header (elapsed time) refreshes this often even without frames.
HEADER_REFRESH = 1.0
#: The text/html snapshot in the display bundle shows at most this many (last) messages.
SNAPSHOT_ENTRIES = 200


def _follower_of(source: Any) -> Any:
    """A RunHandle carries its follower in `.follower`; a follower is used as is."""
    inner = getattr(source, "follower", None)
    return inner if inner is not None else source


def _agent_name(source: Any, follower: Any) -> str | None:
    for obj in (source, follower):
        for attr in ("agent_name", "agent"):
            value = getattr(obj, attr, None)
            if isinstance(value, str) and value:
                return value
            name = value.get("name") if isinstance(value, dict) else None
            if name:
                return str(name)
    return None


class RunView(widgets.VBox):
    """Live view of a RunHandle or Follower (duck-typed, see docs/architecture.md)."""

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
        self.key = key
        self.follower = _follower_of(source)
        self.agent = agent or _agent_name(source, self.follower)
        self._clock = clock
        self._throttle = Throttle(max_hz, clock)
        self._lock = threading.RLock()
        self._pump = pump if pump is not None else shared_pump()
        self._pump_keeps = isinstance(self._pump, ThreadPump)
        self._context = _kernel.ParentContext()
        self._dirty = True
        self._urgent = False
        self._seen_status: str | None = None
        self._last_flush = float("-inf")
        self._hold = float("-inf")  # no normal flush before this (widget-update budget)
        self._header_key: tuple[Any, ...] | None = None
        self._header_at = float("-inf")
        self._done = False
        self._flushing = False
        self.flushes = 0

        # One Layout and one style per widget class for the whole view (see shared.py): a
        # running view opens ~10 comms instead of ~27, a finished one 6.
        self._shared = Shared()
        self.header = self._shared.html()
        self.messages = TranscriptView(tail=tail_chars, shared=self._shared)
        # The approval card (~11 widgets) is built on first need: most runs never ask, and
        # every widget costs a comm_open on the path to the first rendered frame.
        self._approval: ApprovalCard | None = None
        # Cancel / Detach: not built for a chain that is already over (a re-run finished
        # cell shows header + one transcript widget); the notice on first use.
        self._controls: widgets.HBox | None = None
        self._cancel_button: widgets.Button | None = None
        self._detach_button: widgets.Button | None = None
        self._notice: widgets.HTML | None = None
        status = getattr(self.follower, "status", None)
        # CSS classes go in with the comm_open (add_class afterwards is one more message).
        super().__init__(
            [self.header, self.messages], layout=self._shared.layout(), _dom_classes=("lnb-run",)
        )
        if status not in FINAL:
            self._build_controls()

        self.flush()  # what is known now (e.g. a cached transcript) shows at once
        # Building the view (its comm_opens, a cached transcript) is not an update: the first
        # frames after it must not wait out a widget-update budget.
        self._hold = float("-inf")
        ref = weakref.ref(self)

        def listener(_follower: Any) -> None:
            view = ref()
            if view is not None:
                view.notify()

        self._listener = listener
        add = getattr(self.follower, "add_listener", None)
        if add is not None:
            add(listener)
        self.notify()  # catch changes that happened between flush() and add_listener
        if key is not None:
            self._retire_previous(key)

    def _retire_previous(self, key: str) -> None:
        with _views_lock:
            old_ref = _views_by_key.get(key)
            _views_by_key[key] = weakref.ref(self)
        old = old_ref() if old_ref is not None else None
        if old is not None and old is not self:
            old.close()  # its output was replaced by the re-run; stop feeding it

    @property
    def approval(self) -> ApprovalCard:
        """The Approve / Deny card, shown above the controls (created on first use)."""
        with self._lock:
            card = self._approval
            if card is None:
                card = self._approval = ApprovalCard(self._answer, self._lock, shared=self._shared)
                self._arrange()
            return card

    # ---- controls ------------------------------------------------------------------------
    def _arrange(self) -> None:
        parts: list[widgets.Widget] = [self.header, self.messages]
        if self._approval is not None:
            parts.append(self._approval)
        if self._controls is not None:
            parts.append(self._controls)
        children = tuple(parts)
        current = tuple(self.children)  # type: ignore[has-type]  # a trait of an untyped base
        if children != current:
            self.children = children

    def _build_controls(self) -> widgets.HBox:
        with self._lock:
            if self._controls is not None:
                return self._controls
            over = getattr(self.follower, "status", None) in FINAL
            cancel = self._shared.button(
                description="Cancel",
                icon="stop",
                disabled=over,
                tooltip="Cancel the run on the server",
            )
            detach = self._shared.button(
                description="Detach",
                icon="unlink",
                disabled=over,
                tooltip="Stop following here; the run continues",
            )
            # A click runs on the kernel's shell thread: the HTTP call goes to a worker so a
            # slow server (or a run still starting) never freezes the notebook.
            cancel.on_click(lambda _b: self._cancel_in_background())
            detach.on_click(lambda _b: self.detach())
            self._cancel_button, self._detach_button = cancel, detach
            self._controls = widgets.HBox([cancel, detach], layout=self._shared.layout())
            self._arrange()
            return self._controls

    @property
    def cancel_button(self) -> widgets.Button:
        self._build_controls()
        assert self._cancel_button is not None
        return self._cancel_button

    @property
    def detach_button(self) -> widgets.Button:
        self._build_controls()
        assert self._detach_button is not None
        return self._detach_button

    @property
    def notice(self) -> widgets.HTML:
        """One line next to the buttons (cancel / detach outcomes), created on first use."""
        with self._lock:
            if self._notice is None:
                controls = self._build_controls()
                self._notice = self._shared.html()
                controls.children = (*controls.children, self._notice)
            return self._notice

    # ---- repr (nbval compares text/plain: nothing random or time-dependent) ---------------
    def __repr__(self) -> str:
        return f"<letta_nb run view: agent {self.agent}>" if self.agent else "<letta_nb run view>"

    def snapshot_html(self) -> str:
        """Static HTML of the transcript as it is now (tail-limited, last SNAPSHOT_ENTRIES
        messages): what a saved notebook, nbconvert or GitHub shows instead of the widget."""
        transcript = getattr(self.follower, "transcript", None)
        entries = list(getattr(transcript, "entries", None) or [])
        skipped = max(0, len(entries) - SNAPSHOT_ENTRIES)
        shown = entries[skipped:]
        label = f"letta_nb run · agent {self.agent}" if self.agent else "letta_nb run"
        more = f" · {skipped:,} earlier messages not shown" if skipped else ""
        return (
            f'<div class="lnb-snapshot"><div style="color:#6b7280;font-size:90%">'
            f"{html.escape(label)} (transcript when displayed{more})</div>"
            f"{render_html(shown, tail=self.messages.tail)}</div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            # a snapshot must never break displaying the live view
            with contextlib.suppress(Exception):
                bundle["text/html"] = self.snapshot_html()
        return bundle

    # ---- pump protocol -------------------------------------------------------------------
    def notify(self) -> None:
        """Called from the reader thread after a change: mark dirty, wake the pump."""
        status = getattr(self.follower, "status", None)
        if self._dirty and status == self._seen_status and self._pump_keeps:
            # Already marked, and the pump thread keeps a dirty view until it flushes it:
            # nothing to do per frame. Safe without the lock because flush() clears _dirty
            # *before* it reads the follower's state.
            return
        with self._lock:
            self._dirty = True
            if status != self._seen_status:
                self._urgent = True
        self._pump.wake(self)

    def due_in(self) -> float | None:
        with self._lock:
            if self._done:
                return None
            if self._urgent:
                return 0.0
            if self._dirty:
                return max(self._throttle.wait_time(), self._hold - self._clock())
            if getattr(self.follower, "status", None) in ACTIVE:
                return max(0.0, self._last_flush + HEADER_REFRESH - self._clock())
            return None

    def pump_tick(self) -> None:
        with self._lock:
            if self._done or self._flushing:
                return
            if self._urgent:
                self._throttle.ready()  # restart the window: the next normal flush waits
            elif self._dirty:
                if self._clock() < self._hold or not self._throttle.ready():
                    return
            elif self._clock() < self._last_flush + HEADER_REFRESH:
                return
            self._flushing = True
            try:
                self._context.run(self.flush)
            finally:
                self._flushing = False

    # ---- rendering -----------------------------------------------------------------------
    def flush(self) -> None:
        """Bring every widget up to the follower's state; touches only what changed."""
        f = self.follower
        with self._lock:
            status = str(getattr(f, "status", None) or "starting")
            final = status in FINAL
            self._dirty = False
            self._urgent = False
            self._seen_status = status
            self._last_flush = self._clock()
            sent = 0
            header = header_html(f, self.agent)
            # Counters (elapsed, seq, frames/s) refresh once per HEADER_REFRESH; status,
            # warning, error or run changes go out at once.
            key = (
                status,
                getattr(f, "warning", None),
                getattr(f, "error", None),
                getattr(f, "run_id", None),
            )
            if self.header.value != header and (
                key != self._header_key or self._last_flush >= self._header_at + HEADER_REFRESH
            ):
                self.header.value = header
                self._header_key = key
                self._header_at = self._last_flush
                sent += 1
            sent += self.messages.sync(getattr(f, "transcript", None), final=final)
            # max_hz bounds widget updates (comm messages), not flushes: a flush that sent k
            # updates holds the next normal one for k intervals (at most one second).
            if sent > 1:
                interval = self._throttle.interval
                self._hold = self._last_flush + min(sent * interval, 1.0)
            state = getattr(f, "approval", None)
            if state is not None or self._approval is not None:
                self.approval.sync(state)
            if final:
                for button in (self._cancel_button, self._detach_button):
                    if button is not None and not button.disabled:
                        button.disabled = True
            self.flushes += 1

    # ---- buttons -------------------------------------------------------------------------
    def _show_notice(self, text: str, *, error: bool = False) -> None:
        color = "#b91c1c" if error else "#6b7280"
        self.notice.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _answer(self, approve: bool, reason: str | None) -> None:
        self.follower.answer(approve, reason)
        self.notify()

    def _cancel_in_background(self) -> threading.Thread:
        self.cancel_button.disabled = True
        self._show_notice("cancelling…")
        # The click's own context (its parent message), as if the handler had run inline.
        ctx = contextvars.copy_context()
        worker = threading.Thread(
            target=ctx.run, args=(self.cancel,), name="letta-nb-cancel", daemon=True
        )
        worker.start()
        return worker

    def cancel(self) -> None:
        """Cancel the run on the server (the follower then reads its final frames)."""
        self.cancel_button.disabled = True
        try:
            result = self.follower.cancel()
        except LettaNbError as err:
            self.cancel_button.disabled = False
            self._show_notice(str(err), error=True)
            return
        self._show_notice(f"cancel requested ({result})" if result else "cancel requested")
        self.notify()

    def detach(self) -> None:
        """Stop following here only; the run keeps going on the server."""
        self.follower.detach()
        self.detach_button.disabled = True
        self.cancel_button.disabled = True
        self._show_notice(
            "detached: the run continues on the server; re-run the cell or "
            "%letta attach RUN_ID to follow it again"
        )
        self.notify()

    def close(self) -> None:
        with self._lock:
            self._done = True
        self._pump.remove(self)
        remove = getattr(self.follower, "remove_listener", None)
        if remove is not None:
            remove(self._listener)
        _close_tree(self)
        self._shared.close()


def _close_tree(widget: widgets.Widget) -> None:
    """Close a widget and its descendants (ipywidgets' close() leaves children registered)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    for attr in ("layout", "style"):
        sub = getattr(widget, attr, None)
        if isinstance(sub, widgets.Widget):
            sub.close()
    widgets.Widget.close(widget)
