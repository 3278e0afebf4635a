"""Approve / Deny card: one answer per request, never a blocking wait in the click handler.

The click runs in the kernel's shell thread; it only claims the answer, disables the buttons
and hands the answer to `answer(approve, reason)` (the follower starts the new run in its own
thread). A second click, or a click racing an auto-approve policy, cannot send twice: the card
guards locally and the core `ApprovalState` guards again.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..core import approval as ap
from ..core.errors import LettaNbError
from .shared import Shared

AnswerFn = Callable[[bool, "str | None"], Any]


def outcome_text(approve: bool, reason: str | None) -> str:
    if approve:
        return "approved"
    return f"denied: {reason}" if reason else "denied"


def _calls_html(calls: list[dict[str, Any]]) -> str:
    rows = []
    for call in calls:
        name = html.escape(str(call.get("name") or "tool"))
        args = html.escape(str(call.get("arguments") or ""))
        rows.append(f"<div style='font-family:monospace'><b>{name}</b>({args})</div>")
    return "<div style='color:#b45309;font-weight:600'>approval requested</div>" + "".join(rows)


class ApprovalCard(widgets.VBox):
    """Buttons for the follower's current `ApprovalState`; hidden while there is none."""

    def __init__(
        self, answer: AnswerFn, lock: threading.RLock | None = None, *, shared: Shared | None = None
    ) -> None:
        self._answer = answer
        self._lock = lock or threading.RLock()
        sh = shared if shared is not None else Shared()
        self.title = sh.html()
        self.reason = widgets.Text(
            placeholder="reason (sent with Deny)", **sh.kw(widgets.Text, width="22em")
        )
        self.approve_button = sh.button(description="Approve", button_style="success", icon="check")
        self.deny_button = sh.button(description="Deny", button_style="danger", icon="times")
        self.outcome = widgets.Label(**sh.kw(widgets.Label))
        self.approve_button.on_click(lambda _b: self.click(True))
        self.deny_button.on_click(lambda _b: self.click(False))
        row = widgets.HBox(
            [self.approve_button, self.deny_button, self.reason, self.outcome],
            **sh.kw(widgets.HBox),
        )
        # Its own Layout: showing / hiding the card sets `display` on it.
        # CSS classes go in with the comm_open (add_class afterwards is one more message).
        super().__init__(
            [self.title, row], layout=widgets.Layout(display="none"), _dom_classes=("lnb-approval",)
        )
        self._state: Any = None  # the ApprovalState shown
        self._claimed = False  # this card already sent (or is sending) an answer

    # ---- state ---------------------------------------------------------------------------
    def _enable(self, on: bool) -> None:
        for w in (self.approve_button, self.deny_button, self.reason):
            if w.disabled == on:
                w.disabled = not on

    def _show(self, on: bool) -> None:
        display = None if on else "none"
        if self.layout.display != display:
            self.layout.display = display

    def _set_outcome(self, text: str) -> None:
        if self.outcome.value != text:
            self.outcome.value = text

    def sync(self, state: Any) -> None:
        """Mirror the follower's approval (None once the approved run has started)."""
        with self._lock:
            if state is None:
                if self._state is not None and not self._claimed and self._state.open:
                    self._show(False)  # the request went away without an answer from here
                return
            if state is not self._state:
                self._state = state
                self._claimed = False
                self.title.value = _calls_html(list(getattr(state, "tool_calls", []) or []))
                self.reason.value = ""
                self._set_outcome("")
                self._show(True)
            current = getattr(state, "state", ap.PENDING)
            if current == ap.PENDING:
                err = getattr(state, "error", None)
                if err and self._claimed:
                    self._claimed = False
                    self._set_outcome(f"could not send: {err}")
                self._enable(not self._claimed)
            else:
                self._enable(False)
                if current == ap.SENDING and not self._claimed:
                    self._set_outcome("sending…")
                elif current in (ap.APPROVED, ap.DENIED):
                    self._set_outcome(outcome_text(current == ap.APPROVED, state.reason))
                elif current == ap.FAILED:
                    self._set_outcome(f"failed: {getattr(state, 'error', '') or 'not sent'}")

    # ---- clicks --------------------------------------------------------------------------
    def click(self, approve: bool) -> None:
        """Handle Approve (True) or Deny (False): claim, disable, hand over, show outcome."""
        with self._lock:
            if self._claimed or self._state is None or not self._state.open:
                return
            self._claimed = True
            reason = None if approve else (self.reason.value.strip() or None)
            self._enable(False)
            self._set_outcome("sending…")
        try:
            self._answer(approve, reason)
        except LettaNbError as err:
            with self._lock:
                still_open = bool(self._state.open)
                self._claimed = not still_open
                self._set_outcome(f"could not send: {err}")
                self._enable(still_open)
            return
        with self._lock:
            self._set_outcome(outcome_text(approve, reason))
