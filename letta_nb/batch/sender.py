"""How an item reaches the server: the one place that knows where items are sent.

Every item runs in a conversation of its own on the agent (an isolated context: no item sees
another's rows), sent in background mode with the item's otid. On conversations a re-sent
otid re-attaches to the run it started on every Letta server (protocol doc §17.3), so a send
repeated after a kernel death never starts a second run; the run chain (`run.Follower`)
already resumes a broken conversation send by its otid and follows a busy conversation's run.

Creating a conversation is not idempotent. Each attempt's conversation gets a deterministic
summary (`item_summary`: batch key, position, attempt), and a prepare that may repeat an
earlier one (a kernel died between the create and the store, a create whose answer broke) looks
that summary up before creating: an item never gets two conversations. And since nobody else
sends there, a run in an item's conversation is that item's: an item sent by a kernel that died
before its run was named follows the run it finds there, and is sent again (same otid) only
when there is none, so "never sent twice" does not rest on how long the server keeps otids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..core.transcript import Transcript
from ..run import Follower
from .keys import item_summary
from .state import STARTING

if TYPE_CHECKING:
    from .._protocols import LettaBackend
    from .state import ItemState


class ItemSender(Protocol):
    """Where and how the items of one batch are sent (see the module doc)."""

    backend: LettaBackend
    agent_id: str

    def prepare(self, item: ItemState, *, again: bool) -> None:
        """Before an attempt's send: set `item.conversation_id` (the runner stores it before
        anything is sent). `again`: an earlier prepare or send of this attempt may have reached
        the server: look for what it made (the conversation; for an item sent before, its
        run: then `item.runs` names it and nothing is sent again)."""
        ...

    def chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        """A run chain (follower) for the item, nothing started yet (the runner sets its
        approval policy)."""
        ...

    def send(self, chain: Follower, item: ItemState, message: str, otid: str) -> None:
        """Start the item's run on `chain` (a thread reads it)."""
        ...

    def cancel(self, items: list[ItemState]) -> dict[str, str]:
        """Cancel these items' runs on the server: `{run_id: status}`."""
        ...


class ConversationSender:
    """Each item in a conversation of its own (`POST /v1/conversations/{id}/messages`)."""

    def __init__(
        self,
        backend: LettaBackend,
        agent_id: str,
        key: str,
        *,
        stall_after: float = 60.0,
    ) -> None:
        self.backend = backend
        self.agent_id = agent_id
        self.key = key
        self.stall_after = stall_after

    def prepare(self, item: ItemState, *, again: bool) -> None:
        if item.conversation_id is None:
            summary = item_summary(self.key, item.pos, item.attempt)
            found = self._find(summary) if again else None
            if found is None:
                found = self.backend.create_conversation(self.agent_id, summary=summary)
            item.conversation_id = found["id"]
        elif again and item.status == STARTING and item.run_id is None:
            # sent, and its kernel died before the run was named: a run in the item's own
            # conversation is that send's (whatever the server's otid retention)
            runs = self.backend.list_runs(
                conversation_id=item.conversation_id, limit=10, order="asc"
            )
            for run in runs:
                item.add_run(str(run["id"]))

    def _find(self, summary: str) -> dict[str, Any] | None:
        """The conversation an earlier prepare made under `summary` (the oldest, if a create
        whose answer broke was repeated by a server that made both)."""
        rows = self.backend.list_conversations(self.agent_id, summary_search=summary)
        mine = [c for c in rows if c.get("summary") == summary]
        return mine[-1] if mine else None  # newest first: the last is the oldest

    def chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        return Follower(
            self.backend,
            agent_id=self.agent_id,
            transcript=transcript if transcript is not None else Transcript(),
            stall_after=self.stall_after,
            conversation_id=item.conversation_id,
        )

    def send(self, chain: Follower, item: ItemState, message: str, otid: str) -> None:
        chain.start([{"role": "user", "content": message}], otid=otid)

    def cancel(self, items: list[ItemState]) -> dict[str, str]:
        """Named runs in one request (by run id: that also ends a run waiting for approval);
        an item sent whose run is not named yet, through its conversation's cancel."""
        named = [i.run_id for i in items if i.run_id is not None]
        out = self.backend.cancel(self.agent_id, named) if named else {}
        for item in items:
            if item.run_id is None and item.conversation_id is not None:
                out.update(self.backend.cancel_conversation(item.conversation_id))
        return out


def _conforms(sender: ConversationSender) -> ItemSender:
    return sender  # mypy checks the conversation sender against the seam


__all__ = ["ConversationSender", "ItemSender"]
