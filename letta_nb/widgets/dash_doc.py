"""The dashboard's rows and their changes: the logic of `%letta dashboard`, no ipywidgets.

Rows come from three places: this kernel's run chains (the cells' runs, `Session.followers`),
its batches (one row each, and one per item in flight) and the server's active runs that
nobody here follows (`GET /v1/runs?active=true`). Each row says agent, conversation, status,
elapsed time, tokens and the seconds since its last frame, flagged as a stall from
`stall_after` seconds on (a run the kernel does not follow has no frame clock: attach it to
watch it). The document is ``{"v": 1, "n", "h": header, "rows": {id: row}, "order": [ids]}``
and messages carry ``["r", id, row]`` (set), ``["x", id]`` (remove) and ``["o", order]``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.clock import epoch
from ..core.render import one_line
from ..core.status import LIVE, OVER, ChainStatus
from .batch_doc import elapsed, shown_label

if TYPE_CHECKING:
    from ..batch import Batch
    from ..run import Follower
    from ..session import Session

PROTOCOL = 1
#: Seconds without a frame after which a running row is flagged as stalled (documented).
STALL_AFTER = 30.0
#: Rows of this kernel's finished runs kept on the dashboard (newest first).
RECENT_RUNS = 15
WHAT_CHARS = 60


def _clip(text: str | None, chars: int = WHAT_CHARS) -> str:
    line = one_line(text)
    return line if len(line) <= chars else line[: chars - 1] + "…"


def _short(run_id: str | None) -> str:
    return (run_id or "")[:12]


@dataclass
class Row:
    """One line of the dashboard (what `to_json` sends; `target` stays in Python)."""

    id: str
    kind: str  # run | batch | item | server
    agent: str
    status: str
    what: str = ""
    conversation: str | None = None
    elapsed: float | None = None
    tokens: int | None = None
    idle: float | None = None
    stalled: bool = False
    run_id: str | None = None
    live: bool = False
    actions: tuple[str, ...] = ()
    target: Any = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "k": self.kind,
            "ag": self.agent,
            "st": self.status,
            "w": self.what,
            "a": list(self.actions),
        }
        if self.conversation:
            out["cv"] = self.conversation
        if self.elapsed is not None:
            out["el"] = round(self.elapsed, 1)
        if self.tokens is not None:
            out["tok"] = self.tokens
        if self.idle is not None:
            out["idle"] = round(self.idle, 1)
        if self.stalled:
            out["stall"] = True
        if self.run_id:
            out["run"] = self.run_id
        if self.live:
            out["live"] = True
        return out


def chain_row(
    row_id: str,
    kind: str,
    chain: Follower,
    agent: str,
    what: str,
    *,
    stall_after: float,
    conversation: str | None = None,
) -> Row:
    status = str(chain.status)
    running = status == ChainStatus.RUNNING
    idle = chain.idle_seconds if running else None
    return Row(
        id=row_id,
        kind=kind,
        agent=agent,
        status=status,
        what=what,
        conversation=conversation or chain.conversation_id,
        elapsed=chain.active_seconds,
        tokens=chain.transcript.total_tokens(),
        idle=idle,
        stalled=idle is not None and idle >= stall_after,
        run_id=chain.run_id,
        live=status in LIVE,
        actions=("attach", "cancel") if status not in OVER else ("attach",),
        target=chain,
    )


def kernel_rows(session: Session, *, stall_after: float) -> list[Row]:
    """This kernel's cell runs (live ones and the newest finished) and its batches."""
    rows: list[Row] = []
    followers = session.followers()
    finished = 0
    for chain in reversed(followers):  # newest first
        key = session.key_of(chain)
        cursor = session.store.get(key, records=False) if key else None
        over = chain.status in OVER
        if over:
            finished += 1
            if finished > RECENT_RUNS:
                continue
        agent = session.agent_name(chain.agent_id) or chain.agent_id
        rid = chain.run_id or (chain.runs[-1] if chain.runs else "?")
        rows.append(
            chain_row(
                f"run:{rid}",
                "run",
                chain,
                agent,
                _clip(cursor.message) if cursor and cursor.message else f"attached {_short(rid)}",
                stall_after=stall_after,
            )
        )
    for batch in session.batches():
        rows.extend(batch_rows(batch, stall_after=stall_after))
    return rows


def batch_rows(batch: Batch, *, stall_after: float) -> list[Row]:
    """A batch's row, then one per item in flight (a batch's items share its agent)."""
    agent = batch.agent_name or batch.agent_id
    runner = batch.runner
    live: list[Row] = []
    for pos, chain in runner.chains():
        if chain.status not in LIVE:
            continue
        item = runner.items[pos]
        label = batch.index[pos]
        live.append(
            chain_row(
                f"item:{batch.key}:{pos}",
                "item",
                chain,
                agent,
                f"row {shown_label(label)}",
                stall_after=stall_after,
                conversation=item.conversation_id,
            )
        )
    status = batch.status
    idles = [r.idle for r in live if r.idle is not None]
    done = batch.done
    head = Row(
        id=f"batch:{batch.key}",
        kind="batch",
        agent=agent,
        status=status,
        what=f"batch of {len(batch)}: {done} done"
        + (f", {runner.in_flight} in flight" if runner.in_flight else "")
        + (f" · {runner.paused}" if runner.paused else ""),
        elapsed=elapsed(runner.items, time.time()),
        tokens=batch.tokens or None,
        idle=min(idles) if idles else None,
        stalled=any(r.stalled for r in live),
        live=status in ("running", "paused"),
        actions=("attach", "cancel") if status not in ("done", "detached") else ("attach",),
        target=batch,
    )
    return [head, *live]


def server_rows(
    runs: Iterable[Mapping[str, Any]],
    known: set[str],
    names: Mapping[str, str | None],
    now: float,
) -> list[Row]:
    """The server's active runs nobody here follows (no frame clock: attach to watch)."""
    rows: list[Row] = []
    for run in runs:
        rid = str(run.get("id") or "")
        if not rid or rid in known:
            continue
        agent_id = str(run.get("agent_id") or "")
        created = epoch(run.get("created_at"))
        rows.append(
            Row(
                id=f"server:{rid}",
                kind="server",
                agent=names.get(agent_id) or agent_id,
                status=str(run.get("status") or "?"),
                what="not followed here",
                conversation=run.get("conversation_id"),
                elapsed=max(0.0, now - created) if created else None,
                run_id=rid,
                live=True,
                actions=("attach", "cancel"),
                target=run,
            )
        )
    return rows


class DashDoc:
    """The mirror of what browser views have of the dashboard, and the ops that bring them on."""

    def __init__(self) -> None:
        self.n = 0
        self.header: dict[str, Any] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.targets: dict[str, Row] = {}

    def diff(self, rows: list[Row], header: dict[str, Any]) -> tuple[list[list[Any]], bool]:
        ops: list[list[Any]] = []
        fresh = {r.id: r for r in rows}
        for rid in list(self.rows):
            if rid not in fresh:
                del self.rows[rid]
                ops.append(["x", rid])
        for row in rows:
            body = row.to_json()
            if self.rows.get(row.id) != body:
                self.rows[row.id] = body
                ops.append(["r", row.id, body])
        order = [r.id for r in rows]
        if order != self.order:
            self.order = order
            ops.append(["o", order])
        self.targets = fresh
        changed = bool(ops) or header != self.header
        self.header = header
        return ops, changed

    def message(self, ops: list[list[Any]], header: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        return {"t": "d", "n": self.n, "o": ops, "h": header}

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL,
            "n": self.n,
            "h": dict(self.header),
            "rows": copy.deepcopy(self.rows),
            "order": list(self.order),
        }


def empty_doc() -> dict[str, Any]:
    return {"v": PROTOCOL, "n": 0, "h": {}, "rows": {}, "order": []}


def apply_message(doc: dict[str, Any], msg: Mapping[str, Any]) -> bool:
    """Apply one message as the browser does; False if it was not next in line."""
    if msg.get("t") == "doc":
        new = msg["doc"]
        if new["n"] < doc["n"]:
            return False
        doc.clear()
        doc.update(copy.deepcopy(new))
        return True
    if msg["n"] != doc["n"] + 1:
        return False
    for op in msg.get("o", ()):
        if op[0] == "r":
            doc["rows"][op[1]] = copy.deepcopy(op[2])
        elif op[0] == "x":
            doc["rows"].pop(op[1], None)
        elif op[0] == "o":
            doc["order"] = list(op[1])
    if "h" in msg:
        doc["h"] = msg["h"]
    doc["n"] = msg["n"]
    return True


def short_run(run_id: str | None) -> str:
    return _short(run_id)
