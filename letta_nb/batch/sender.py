"""How an item reaches the server: the one place that knows where items are sent.

`ItemSender` is the seam between the batch's runner and the server's API. Each item must run
in an isolated context on the agent (its own conversation, where the server has them); a
send must carry the item's otid, and `reattaches` says whether re-sending that otid attaches to
the run it already started (then a send repeated after a kernel death never starts a second
run). `AgentSender` sends to the agent's own history (the embedded server re-attaches otids
there); a conversation sender plugs in here without touching the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..core.transcript import Transcript
from ..run import Follower, Policy

if TYPE_CHECKING:
    from .._protocols import LettaBackend
    from .state import ItemState


class ItemSender(Protocol):
    """Where and how the items of one batch are sent (see the module doc)."""

    backend: LettaBackend
    agent_id: str

    @property
    def reattaches(self) -> bool:
        """Re-sending an item's otid attaches to the run it started (no second run)."""
        ...

    @property
    def isolated(self) -> bool:
        """Each item gets a context of its own (a conversation per item)."""
        ...

    def prepare(self, item: ItemState) -> None:
        """Before an attempt's first send: e.g. create the item's conversation (and set
        `item.conversation_id`); the runner stores it before anything is sent."""
        ...

    def chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        """A run chain (follower) for the item, nothing started yet."""
        ...

    def send(self, chain: Follower, item: ItemState, message: str, otid: str) -> None:
        """Start the item's run on `chain` (a thread reads it)."""
        ...

    def cancel(self, run_ids: list[str]) -> dict[str, str]:
        """Cancel these runs on the server, in one request where the API allows it."""
        ...


class AgentSender:
    """Items sent to the agent's own message history (`POST /v1/agents/{id}/messages`)."""

    isolated = False

    def __init__(
        self,
        backend: LettaBackend,
        agent_id: str,
        *,
        policy: str | Policy | None = None,
        stall_after: float = 60.0,
    ) -> None:
        self.backend = backend
        self.agent_id = agent_id
        self.policy = policy
        self.stall_after = stall_after

    @property
    def reattaches(self) -> bool:
        return bool(self.backend.reattaches_otid)

    def prepare(self, item: ItemState) -> None:
        return None

    def chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        return Follower(
            self.backend,
            agent_id=self.agent_id,
            transcript=transcript if transcript is not None else Transcript(),
            stall_after=self.stall_after,
            policy=self.policy,
        )

    def send(self, chain: Follower, item: ItemState, message: str, otid: str) -> None:
        chain.start([{"role": "user", "content": message}], otid=otid)

    def cancel(self, run_ids: list[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        return self.backend.cancel(self.agent_id, run_ids)


def _conforms(sender: AgentSender) -> ItemSender:
    return sender  # mypy checks the agent sender against the seam


__all__ = ["AgentSender", "ItemSender"]
