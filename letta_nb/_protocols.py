"""The typed seams between layers: what the run chain needs of a Letta server, what front ends
read of a run chain.

`Backend` (backend.py) is the one implementation of `LettaBackend` that talks to a server; the
test fakes implement the same Protocols, so mypy checks them against what the real code uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from .core.approval import ApprovalState
    from .core.chunks import Chunk
    from .core.transcript import Transcript


class ChunkStream(Protocol):
    """An open stream of a run's frames; `close()` may be called from another thread."""

    def __iter__(self) -> Iterator[Chunk]: ...

    def __next__(self) -> Chunk: ...

    def close(self) -> None: ...


class LettaBackend(Protocol):
    """One Letta server (Cloud, self-hosted or embedded), as the run chain, session and frames
    use it. Every method raises `core.errors` (one line, redacted), never an SDK exception."""

    base_url: str
    #: True when the server re-attaches a re-sent otid to the run it started.
    reattaches_otid: bool

    # Streams end with `StreamInterrupted` unless the server finished them (`[DONE]`, an
    # error event, or an empty body past a run's end); REST calls retry what may succeed.

    def health(self) -> dict[str, Any]: ...

    def list_agents(self, *, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    def resolve_agent(self, name_or_id: str) -> dict[str, Any]: ...

    def create_agent(self, name: str, model: str = ..., **kw: Any) -> dict[str, Any]: ...

    def pending_approval(
        self, agent_id: str, conversation_id: str | None = None
    ) -> list[dict[str, Any]]: ...

    def start(
        self,
        agent_id: str,
        messages: list[dict[str, Any]],
        *,
        otid: str,
        conversation_id: str | None = None,
        background: bool = True,
        stream_tokens: bool = True,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream: ...

    def resume(
        self,
        run_id: str,
        starting_after: int = 0,
        *,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream: ...

    def resume_conversation(
        self,
        conversation_id: str,
        *,
        otid: str | None = None,
        run_id: str | None = None,
        starting_after: int = 0,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream:
        """A conversation's run by otid / run id / the newest active one (`NotFound`: no
        run has that otid)."""
        ...

    def approve(
        self,
        agent_id: str,
        approvals: list[dict[str, Any]],
        *,
        otid: str,
        conversation_id: str | None = None,
    ) -> ChunkStream: ...

    def cancel(self, agent_id: str, run_ids: list[str] | None) -> dict[str, str]: ...

    def get_run(self, run_id: str) -> dict[str, Any]: ...

    def list_runs(
        self,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        statuses: list[str] | None = None,
        limit: int = 100,
        order: str = "desc",
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]: ...

    # Conversations: rows are {id, agent_id, summary, created_at, updated_at, last_message_at}.
    def create_conversation(
        self, agent_id: str, *, summary: str | None = None
    ) -> dict[str, Any]: ...

    def get_conversation(self, conversation_id: str) -> dict[str, Any]: ...

    def list_conversations(
        self,
        agent_id: str | None = None,
        *,
        summary_search: str | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]: ...

    def delete_conversation(self, conversation_id: str) -> None: ...

    def fork_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, Any]: ...

    def cancel_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, str]: ...

    def conversation_messages(
        self, conversation_id: str, *, limit: int = 100, order: Literal["asc", "desc"] = "asc"
    ) -> list[dict[str, Any]]: ...

    def run_usage(self, run_id: str) -> dict[str, Any]: ...

    def run_messages(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]: ...

    def run_steps(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


Listener = Callable[[Any], object]


class RunChain(Protocol):
    """What a front end (run view, magics, frames) reads of one followed run chain.

    Listeners are called from the reader thread after each change; front ends only mark
    themselves dirty there and draw on their own schedule. Everything is read-only here:
    front ends act through `answer`, `cancel` and `detach`.
    """

    @property
    def agent_id(self) -> str: ...

    @property
    def conversation_id(self) -> str | None:
        """The conversation the chain's runs belong to (None: the agent's default history)."""
        ...

    @property
    def busy_run(self) -> str | None:
        """The run followed because the send found the conversation busy with it (the
        chain's own message was not sent; `warning` says so); None for its own send."""
        ...

    @property
    def status(self) -> str:
        """A `core.status.ChainStatus` value. `DETACHED`: this kernel stopped reading at
        `last_seq` (the run goes on; re-running the cell or `lnb.attach` revives this same
        chain). `INCOMPLETE`: the server no longer has every frame (`warning` says which)."""
        ...

    @property
    def approval(self) -> ApprovalState | None: ...

    @property
    def warning(self) -> str | None:
        """One line: reconnecting, a stall, or what an incomplete run is missing."""
        ...

    @property
    def error(self) -> str | None: ...

    @property
    def transcript(self) -> Transcript: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def runs(self) -> list[str]: ...

    @property
    def last_seq(self) -> int: ...

    @property
    def active_seconds(self) -> float:
        """Time the chain's runs were being worked on, human approval waits excluded (a
        chain restored from its cursor: the server's run durations)."""
        ...

    def add_listener(self, fn: Listener) -> None: ...

    def remove_listener(self, fn: Listener) -> None: ...

    def answer(self, approve: bool, reason: str | None = None) -> None: ...

    def cancel(self) -> str: ...

    def detach(self) -> None: ...
