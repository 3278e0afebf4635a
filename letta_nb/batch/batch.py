"""`Batch`: what `lnb.map(...)` gives back — one agent run per row, in the background.

A thin front over the `Runner` (the threads) and the items' states: the results as a
DataFrame aligned to the input's index, counts and progress, `wait`, `cancel`, `retry`,
approvals (`approve` / `deny`, or the inbox of the batch view), one item's live run. It
imports no front end until it is displayed.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError
from ..core.render import format_seconds
from ..run import Follower, RunEnd, replay
from .state import OVER, RETRYABLE, STATUSES, WAITING, ItemState

if TYPE_CHECKING:
    import pandas as pd

    from ..handle import RunHandle
    from ..session import Session
    from .runner import Runner

#: Bound of `wait(None)`: a notebook cell never hangs forever.
WAIT_BOUND = 3600.0
FRAME_COLUMNS = [
    "answer",
    "status",
    "stop_reason",
    "run_id",
    "conversation_id",
    "tokens",
    "duration",
    "error",
]


class Batch:
    """A batch of agent runs over the rows of a table (see `letta_nb.map`)."""

    _view: Any = None  # the one live view every display of this batch shares

    def __init__(
        self,
        session: Session,
        *,
        key: str,
        agent: dict[str, Any],
        index: pd.Index,
        template: str | None,
        runner: Runner,
    ) -> None:
        self._session = session
        self.key = key
        self.agent_id: str = agent["id"]
        self.agent_name: str | None = agent.get("name")
        self.index = index
        self.template = template
        self.runner = runner
        self.created = time.time()

    # ---- state ---------------------------------------------------------------------------
    @property
    def items(self) -> list[ItemState]:
        return self.runner.items

    def __len__(self) -> int:
        return len(self.runner.items)

    @property
    def status(self) -> str:
        """`running`, `paused` (server unreachable: it goes on by itself), `waiting` (only
        approvals left), `detached` (not followed here) or `done`."""
        return self.runner.status

    @property
    def paused(self) -> str | None:
        """Why the batch waits for its server (one line), or None."""
        return self.runner.paused

    @property
    def counts(self) -> dict[str, int]:
        """Items per status (statuses with none left out), in lifecycle order."""
        found: dict[str, int] = {}
        for item in self.runner.items:
            found[item.status] = found.get(item.status, 0) + 1
        return {s: found[s] for s in STATUSES if s in found}

    @property
    def done(self) -> int:
        """Items whose result is final."""
        return sum(1 for item in self.runner.items if item.status in OVER)

    @property
    def rate(self) -> float | None:
        """Items finished per second lately (None before the first)."""
        return self.runner.rate()

    @property
    def eta(self) -> float | None:
        """Seconds until every item not waiting for a person is done, at the current rate."""
        rate = self.rate
        left = sum(1 for i in self.runner.items if i.status not in OVER and i.status != WAITING)
        if not left:
            return 0.0
        return left / rate if rate else None

    @property
    def tokens(self) -> int:
        return sum(item.tokens or 0 for item in self.runner.items)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per item, aligned to the input's index, filled as items finish."""
        import pandas as pd

        from ..tables import BatchFrame

        items = list(self.runner.items)
        data = {
            "answer": [i.answer for i in items],
            "status": pd.Categorical([i.status for i in items], categories=list(STATUSES)),
            "stop_reason": [i.stop_reason for i in items],
            "run_id": [i.run_id for i in items],
            "conversation_id": [i.conversation_id for i in items],
            "tokens": pd.array([i.tokens for i in items], dtype="Int64"),
            "duration": pd.to_timedelta(
                [math.nan if i.duration is None else i.duration for i in items], unit="s"
            ),
            "error": [i.error for i in items],
        }
        return BatchFrame(data, index=self.index, columns=FRAME_COLUMNS)

    # ---- control -------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> str:
        """Block until every item is over or waits for an approval (or `timeout` seconds);
        returns the batch's status. `None` still has a bound (one hour)."""
        if timeout is not None and math.isnan(timeout):
            raise ConfigurationError("timeout must be a number of seconds, not nan")
        bound = WAIT_BOUND if timeout is None or math.isinf(timeout) else max(0.0, timeout)
        return self.runner.wait(bound)

    def cancel(self) -> dict[str, int]:
        """Cancel the batch: unsent items are never sent, running ones are cancelled on the
        server (one request for the named runs; one sent but not named yet through its
        conversation). Returns the counts once the cancels are sent."""
        self.runner.cancel()
        return self.counts

    def retry(self, failed: bool = True, *, cancelled: bool = False) -> int:
        """Send failed (and incomplete) items again — and cancelled ones with `cancelled` — as
        new attempts (a new otid, a new conversation). Returns how many."""
        statuses = set(RETRYABLE if failed else ())
        if cancelled:
            statuses.add("cancelled")
        return self.runner.retry(statuses)

    def resume(self) -> int:
        """Follow the items again after `detach()` (or a detached item view)."""
        return self.runner.resume()

    def detach(self) -> None:
        """Stop following here; the runs go on on the server (a re-run re-attaches)."""
        self.runner.close()

    # ---- approvals -----------------------------------------------------------------------
    @property
    def inbox(self) -> list[dict[str, Any]]:
        """Items waiting for an approval: label, position and the pending tool calls."""
        out = []
        for pos, chain in self.runner.waiting():
            state = chain.approval
            out.append(
                {
                    "label": self.index[pos],
                    "pos": pos,
                    "tool_calls": list(state.tool_calls) if state is not None else [],
                    "run_id": chain.run_id,
                }
            )
        return out

    def approve(self, labels: Any = None) -> int:
        """Approve the waiting items (all of them, or these index labels); how many."""
        return self.runner.answer(self._positions(labels), True, None)

    def deny(self, labels: Any = None, reason: str | None = None) -> int:
        """Deny the waiting items (all of them, or these index labels), with a reason."""
        return self.runner.answer(self._positions(labels), False, reason)

    def _positions(self, labels: Any) -> list[int] | None:
        if labels is None:
            return None
        if not isinstance(labels, list | tuple | set):
            labels = [labels]
        return [self.position(label) for label in labels]

    def position(self, label: Any) -> int:
        """The position of an index label (a label that is not unique is refused)."""
        try:
            loc = self.index.get_loc(label)
        except KeyError:
            raise ConfigurationError(f"no item has the label {label!r}") from None
        if not isinstance(loc, int):
            raise ConfigurationError(
                f"the label {label!r} is not unique; use batch.item_at(position)"
            )
        return loc

    # ---- one item ------------------------------------------------------------------------
    def item(self, label: Any) -> RunHandle:
        """One item's run chain as a `RunHandle` (its live view when displayed)."""
        return self.item_at(self.position(label))

    def item_at(self, pos: int) -> RunHandle:
        from ..handle import RunHandle

        if not 0 <= pos < len(self):
            raise ConfigurationError(f"position {pos} is outside the batch (0..{len(self) - 1})")
        return RunHandle(self._session, self.chain_at(pos), f"{self.key}:{pos}")

    def chain_at(self, pos: int) -> Follower:
        """The item's live follower, or one replaying its stored runs (an item already over
        keeps no transcript here: its runs are read again from the server)."""
        live = self.runner.chain(pos)
        if live is not None:
            return live
        item = self.runner.items[pos]
        if not item.runs:
            raise ConfigurationError(f"item {self.index[pos]!r} has no run yet ({item.status})")
        chain = self.runner.sender.chain(item)
        for rid in item.runs[:-1]:  # earlier runs of an approval chain, bounded reads
            replay(chain.backend, rid, chain.transcript, RunEnd(), include_pings=False)
        chain.follow(item.runs[-1])
        return chain

    # ---- display -------------------------------------------------------------------------
    def summary(self) -> str:
        """`40 items · 12 completed · 4 running · 24 pending` (deterministic text)."""
        parts = [f"{len(self)} items"]
        parts += [f"{n} {status}" for status, n in self.counts.items()]
        return " · ".join(parts)

    def __repr__(self) -> str:
        agent = self.agent_name or self.agent_id
        return f"<letta_nb Batch {self.key} agent={agent} {self.summary()}>"

    def _header(self) -> str:
        parts = [self.agent_name or self.agent_id, self.status, self.summary()]
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        rate = self.rate
        if rate:
            parts.append(f"{rate:.2f} items/s")
        eta = self.eta
        if eta and self.status == "running":
            parts.append(f"ETA {format_seconds(eta)}")
        return " · ".join(parts)

    def static_html(self, *, rows: int = 200) -> str:
        """The saved-notebook copy: the counts and the result table."""
        from ..tables import batch_html

        return batch_html(self.frame, header=self._header(), paused=self.paused, rows=rows)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "text/plain": f"batch {self.status} · {self.summary()}",
            "text/html": self.static_html(),
        }
        view = _live_view(self)
        if view is not None:
            try:
                data, _meta = view._bundle()
            except Exception:
                data = None
            if isinstance(data, dict):
                bundle.update(data)
        return bundle

    def _ipython_display_(self) -> None:
        """In a kernel: the batch view (one per batch); elsewhere the text and HTML."""
        from IPython.display import display

        view = _live_view(self)
        if view is not None:
            view._ipython_display_()
            return
        display(self._repr_mimebundle_(), raw=True)


def _live_view(batch: Batch) -> Any:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or not hasattr(shell, "kernel"):
            return None
        from ..widgets.batch_view import BatchView
    except Exception:
        return None
    view = batch._view
    if view is None or getattr(view, "comm", None) is None:
        view = BatchView(batch)
        batch._view = view
    return view
