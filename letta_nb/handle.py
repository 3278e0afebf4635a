"""`RunHandle`: what `send`, `attach` and `%%letta --out VAR` give back.

A thin view over a `Follower` (the live chain) and its cursor. It holds no raw chunks:
`.chunks` replays the runs from the server when asked, so a million-frame run costs the kernel
only its transcript. It imports no front end (the widget is loaded lazily when displayed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.render import header_text, render_html, render_text

if TYPE_CHECKING:
    import pandas as pd

    from .core.approval import ApprovalState
    from .core.cursor import Cursor
    from .run import Follower
    from .session import Session


class RunHandle:
    """One run chain as the notebook sees it (see docs/architecture.md)."""

    _view: Any = None  # the one live view every repr of this handle shares

    def __init__(self, session: Session, follower: Follower, key: str) -> None:
        self._session = session
        self.follower = follower
        self.key = key

    # ---- state ---------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.follower.status

    @property
    def run_id(self) -> str | None:
        return self.follower.run_id

    @property
    def runs(self) -> list[str]:
        return self.follower.runs

    @property
    def agent_id(self) -> str:
        return self.follower.agent_id

    @property
    def agent_name(self) -> str | None:
        return self._session.agent_name(self.agent_id)

    @property
    def conversation_id(self) -> str | None:
        """The conversation of the chain's runs (None: the agent's default history)."""
        return self.follower.conversation_id

    @property
    def conversation_label(self) -> str | None:
        """The conversation as views name it: its summary, else its short id."""
        return self._session.conversation_label(self.follower.conversation_id)

    @property
    def busy_run(self) -> str | None:
        """The run this chain follows because its conversation was busy with it (this
        message was not sent; `.warning` says so); None when it follows its own send."""
        return self.follower.busy_run

    @property
    def error(self) -> str | None:
        return self.follower.error

    @property
    def approval(self) -> ApprovalState | None:
        return self.follower.approval

    @property
    def reconnects(self) -> int:
        """Resumes opened after a break or an EOF so far (see `Follower.reconnects`)."""
        return self.follower.reconnects

    @property
    def warning(self) -> str | None:
        return self.follower.warning

    @property
    def transcript(self) -> str:
        """Deterministic text of the whole chain (no ids, no times)."""
        return render_text(self.follower.transcript)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.follower.transcript.to_records()

    @property
    def cursor(self) -> Cursor:
        return self._session.cursor_of(self)

    @property
    def chunks(self) -> pd.DataFrame:
        """Every stored frame of the chain, replayed from the server up to the cursor (the
        same table as `lnb.chunks_frame`, one run after another; cuts are resumed)."""
        from .frames import chunk_row, chunks_table

        transcript = self.follower.transcript
        rows: list[dict[str, Any]] = []
        for rid in self.follower.runs:
            end = transcript.last_seq(rid)
            if end > 0:  # never read past the cursor: past the end a real server hangs
                frames = self._session.stored_frames(rid, until=end)
                rows.extend(chunk_row(rid, c) for c in frames.frames)
        return chunks_table(rows)

    # ---- control -------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> str:
        """Block until the chain settles (or `timeout`); returns the status."""
        return self.follower.wait(timeout)

    def started(self, timeout: float = 10.0) -> str | None:
        """Wait (bounded) until the server has named the chain's run; returns its id (None
        when it did not within `timeout`). The run goes on either way."""
        return self.follower.named(timeout)

    def approve(self) -> RunHandle:
        self.follower.answer(True)
        return self

    def deny(self, reason: str | None = None) -> RunHandle:
        self.follower.answer(False, reason)
        return self

    def cancel(self) -> str:
        return self.follower.cancel()

    def detach(self) -> RunHandle:
        self.follower.detach()
        return self

    # ---- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        where = f" conversation={self.conversation_id}" if self.conversation_id else ""
        return (
            f"<RunHandle agent={self.agent_id}{where} run={self.run_id} status={self.status} "
            f"seq={self.follower.last_seq}>"
        )

    def _static_html(self) -> str:
        f = self.follower
        header = header_text(
            self.agent_name or self.agent_id,
            f.status,
            f.active_seconds,
            f.transcript.total_tokens(),
            conversation=self.conversation_label,
        )
        return render_html(f.transcript, tail=20_000, header=header, error=f.error)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        head = f"{self.status} · run {self.run_id or '(starting)'}"
        text = self.transcript
        bundle: dict[str, Any] = {
            "text/plain": f"{head}\n{text}" if text else head,
            "text/html": self._static_html(),
        }
        widget = _widget_bundle(self)
        if widget:
            bundle.update(widget)
        return bundle

    def _ipython_display_(self) -> None:
        """In a kernel: the run's live view (one per handle, shown with a display_id so the
        output ends with the final transcript); elsewhere the text and static HTML."""
        from IPython.display import display

        view = _live_view(self)
        if view is not None:
            view._ipython_display_()
            return
        bundle = self._repr_mimebundle_()
        display(bundle, raw=True)


def _live_view(handle: RunHandle) -> Any:
    """The handle's one live view (every display of it shares it), only inside a kernel."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or not hasattr(shell, "kernel"):
            return None
        from .widgets import RunView
    except Exception:
        return None
    view = getattr(handle, "_view", None)
    if view is None or getattr(view, "comm", None) is None:
        view = RunView(handle)
        handle._view = view
    return view


def _widget_bundle(handle: RunHandle) -> dict[str, Any] | None:
    """The live view's bundle (widget + its static copy), only inside a kernel."""
    try:
        view = _live_view(handle)
        if view is None:
            return None
        data, _metadata = view._bundle()
    except Exception:
        return None
    return data if isinstance(data, dict) else None
