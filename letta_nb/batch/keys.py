"""Identities of a batch and its items: what makes a re-run re-attach instead of re-sending.

A batch's key is a hash of the agent, the template and every item (its index label and the
message it becomes), so the same call on the same rows finds the same batch after a re-run
or a kernel restart, and a changed row makes another batch. An item's otid is derived from
the batch key, its position and its attempt, so a send repeated after a kernel death carries
the same otid (the server re-attaches it to the run it started: never a second run) while
`Batch.retry()` (a deliberate new attempt) gets a new one. Each attempt's conversation is
named the same way (`item_summary`), so a repeated prepare finds it instead of making another.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import uuid
from collections.abc import Iterable
from typing import Any


def label_text(label: Any) -> str:
    """A stable text of an index label (numbers, strings, timestamps, tuples...): NumPy's
    scalars read as the Python values they hold, so `df.index[i]` and iteration agree."""
    if isinstance(label, tuple):
        return json.dumps([label_text(part) for part in label])
    if isinstance(label, numbers.Number) and not isinstance(label, bool | int | float):
        item = getattr(label, "item", None)
        label = item() if callable(item) else label
    return json.dumps(label, default=str, ensure_ascii=False)


def item_digest(label: Any, message: str) -> str:
    """What an item is: its index label and its message (a stored item must match it)."""
    raw = f"{label_text(label)}\0{message}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def batch_key(agent_id: str, template: str | None, digests: Iterable[str]) -> str:
    """The default key: agent id, template and the items' digests, in order."""
    h = hashlib.sha256(f"{agent_id}\0{template or ''}\0".encode())
    for digest in digests:
        h.update(digest.encode())
        h.update(b"\n")
    return f"batch:{h.hexdigest()[:24]}"


def explicit_key(key: str) -> str:
    """`key=` given by the user (namespaced apart from the hashed keys)."""
    return f"batch:key:{key}"


def item_otid(key: str, pos: int, attempt: int) -> str:
    """The otid of an item's send: the same for every repetition of one attempt."""
    digest = hashlib.sha256(f"{key}\0{pos}\0{attempt}".encode()).digest()[:16]
    return f"otid-{uuid.UUID(bytes=digest, version=4)}"


def item_summary(key: str, pos: int, attempt: int) -> str:
    """The summary of an attempt's conversation: how a prepare repeated after a kernel death
    finds the conversation it made (and how a person tells the batch's conversations apart)."""
    return f"{key} item {pos}" + (f" attempt {attempt}" if attempt else "")
