"""Batch runs: one agent run per row of a DataFrame, resumable across kernel restarts.

Layers, as in the rest of the package: `keys.py`, `state.py` and `plan.py` are pure (item
identities and otids, the per-item state machine, the scheduler's decisions and the 429 pace);
`inputs.py` turns a DataFrame / Series / list into messages; `sender.py` is the one seam that
knows where an item is sent (a conversation of its own); `chains.py` holds the items'
followers and what they tell the runner; `runner.py` runs the threads (through
`run.Follower`, never a reader of its own); `batch.py` is the `Batch` front; `open_batch`
(here) finds or starts one.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._filelock import HeldLock
from ..core.errors import ConfigurationError
from .batch import Batch
from .inputs import prepare
from .keys import batch_key, explicit_key, item_digest
from .runner import Runner
from .sender import ConversationSender, ItemSender
from .state import ItemState

if TYPE_CHECKING:
    from ..run import Policy
    from ..session import Session

__all__ = ["Batch", "ItemSender", "ItemState", "Runner", "open_batch", "sender_for"]

#: Most items in flight at once (a batch over many rows belongs on a real server's limits).
MAX_CONCURRENCY = 256


def sender_for(session: Session, agent_id: str, key: str) -> ItemSender:
    """The one place that decides where a batch's items are sent: each in a conversation of
    its own on the agent."""
    return ConversationSender(session.backend, agent_id, key, stall_after=session.stall_after)


def _check(concurrency: Any, timeout: Any, policy: Any) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise ConfigurationError(f"concurrency must be a whole number, not {concurrency!r}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigurationError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {concurrency}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"timeout must be a positive, finite number of seconds, not {timeout!r}"
        )
    if policy not in (None, "approve", "deny") and not callable(policy):
        raise ConfigurationError(f"policy must be 'approve', 'deny' or a callable, not {policy!r}")


def open_batch(
    session: Session,
    items: Any,
    template: str | None = None,
    *,
    agent: str | dict[str, Any] | None = None,
    concurrency: int = 4,
    key: str | None = None,
    policy: str | Policy | None = None,
    timeout: float | None = None,
) -> Batch:
    """Start a batch, or re-attach the batch with the same key (see `letta_nb.map`)."""
    _check(concurrency, timeout, policy)
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ConfigurationError(f"key must be a non-empty string, not {key!r}")
    given = prepare(items, template)
    row = session.resolve(agent)
    agent_id = row["id"]
    digests = [
        item_digest(label, msg) for label, msg in zip(given.index, given.messages, strict=True)
    ]
    bkey = explicit_key(key) if key is not None else batch_key(agent_id, template, digests)
    live = session.batch(bkey)
    if live is not None:
        if len(live) != len(digests):
            raise ConfigurationError(
                f"batch {bkey} is running {len(live)} items here, this input has "
                f"{len(digests)}: pass another key= (or wait for it, then map the new rows)"
            )
        _same_items(bkey, live.runner.items, digests, given.index)
        if live.agent_id != agent_id:
            raise ConfigurationError(f"batch {bkey} runs on another agent ({live.agent_id})")
        live.runner.policy = policy
        if live.runner.closed or live.status == "detached":
            live.runner.resume()
        return live
    store = session.store
    meta = store.get_batch(bkey)
    if meta is not None and meta.get("agent_id") != agent_id:
        raise ConfigurationError(
            f"batch {bkey} runs on agent {meta.get('agent_id')}, not {agent_id}: pass another key="
        )
    stored = store.batch_items(bkey)
    states = [
        ItemState.from_record(pos, stored[pos]) if pos in stored else ItemState(pos, digest)
        for pos, digest in enumerate(digests)
    ]
    _same_items(bkey, states, digests, given.index, stored_count=len(stored))
    store.put_batch(
        bkey,
        {
            "agent_id": agent_id,
            "template": template,
            "size": len(states),
            "created_at": (meta or {}).get("created_at") or time.time(),
        },
    )
    store.put_batch_items(bkey, [(s.pos, s.to_record()) for s in states if s.pos not in stored])
    runner = Runner(
        key=bkey,
        items=states,
        messages=given.messages,
        sender=sender_for(session, agent_id, bkey),
        store=store,
        concurrency=concurrency,
        policy=policy,
        timeout=timeout,
        owner=owner_lock(store.path, bkey),
    )
    batch = Batch(session, key=bkey, agent=row, index=given.index, template=template, runner=runner)
    runner.start()  # BatchInUse: another kernel runs it (nothing sent, nothing kept here)
    session.add_batch(batch)
    return batch


def owner_lock(store_path: Path, key: str) -> HeldLock:
    """The lock a process holds while it runs batch `key` (beside the cursor store, 0600)."""
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return HeldLock(store_path.parent / "batches" / f"{name}.lock")


def _same_items(
    key: str,
    states: list[ItemState],
    digests: list[str],
    index: Any,
    *,
    stored_count: int | None = None,
) -> None:
    """A key that re-attaches must hold these very items (same labels, same messages)."""
    count = len(states) if stored_count is None else stored_count
    if count > len(digests):
        raise ConfigurationError(
            f"batch {key} holds {count} items, this input has {len(digests)}: pass another key="
        )
    for state, digest in zip(states, digests, strict=False):
        if state.digest != digest:
            raise ConfigurationError(
                f"item {state.pos} ({index[state.pos]!r}) differs from the one batch {key} "
                "holds: pass another key= for a new batch"
            )
