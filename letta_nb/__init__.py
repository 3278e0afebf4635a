"""letta_nb: Letta background runs with resumable streaming, first-class in Jupyter.

`import letta_nb` stays light: the SDK, pandas and ipywidgets load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

    from .batch import Batch
    from .handle import RunHandle
    from .run import Policy
    from .session import Session

__all__ = [
    "__version__",
    "agents_frame",
    "attach",
    "chunks_frame",
    "connect",
    "conversations_frame",
    "load_ipython_extension",
    "map",
    "runs_frame",
    "send",
    "unload_ipython_extension",
    "usage_frame",
]


def connect(base_url: str | None = None, api_key: str | None = None, **kw: Any) -> Session:
    """Connect (explicit → LETTA_BASE_URL/LETTA_API_KEY → embedded server) and make it current."""
    from .connection import connect as _connect

    return _connect(base_url, api_key, **kw)


def send(message: str, agent: str | None = None, **kw: Any) -> RunHandle:
    """Send `message` with the current session; see `Session.send`."""
    from .connection import current

    return current().send(message, agent, **kw)


def map(
    items: Any,
    template: str | None = None,
    *,
    agent: str | None = None,
    concurrency: int = 4,
    key: str | None = None,
    policy: str | Policy | None = None,
    timeout: float | None = None,
) -> Batch:
    """Run the agent over every item, in the background, at most `concurrency` at a time.

    `items`: a DataFrame (each row formats `template`: `{column}`), a Series or a list of
    strings (the messages themselves, or `{value}` / `{index}` in a template). Each item runs
    in a run of its own; the call returns a `Batch` at once (`.frame`, `.wait()`, `.cancel()`,
    `.retry()`, `.approve()` / `.deny()`; displayed, its live view). The same call (the same
    `key`: by default a hash of agent, template and items) re-attaches after a re-run or a
    kernel restart: finished items are shown, running ones followed, unsent ones sent; no item
    is sent twice. `policy` answers approvals as in `send`; `timeout` limits each item's run
    (seconds; it is cancelled on the server after that).
    """
    from .connection import current

    return current().map(
        items,
        template,
        agent=agent,
        concurrency=concurrency,
        key=key,
        policy=policy,
        timeout=timeout,
    )


def attach(
    run_id: str, starting_after: int = 0, *, batch_size: int | None = None, **kw: Any
) -> RunHandle:
    """Follow an existing run from `starting_after` (exclusive); `batch_size` → the resume.

    A run this kernel already follows (e.g. detached) continues from its own cursor.
    """
    from .connection import current

    return current().attach(run_id, starting_after, batch_size=batch_size, **kw)


def runs_frame(
    agent: str | None = None,
    active: bool | None = None,
    limit: int = 100,
    conversation: str | None = None,
) -> pd.DataFrame:
    """Recent runs (newest first) of the current session, optionally of one agent, of one
    conversation (NAME or id) or only active ones."""
    from .connection import current

    return current().runs_frame(agent, active=active, limit=limit, conversation=conversation)


def chunks_frame(run_id: str, batch_size: int | None = None) -> pd.DataFrame:
    """Every stored frame of a run, replayed from the server (seq-less frames get their seq).

    A run this kernel follows is read up to its cursor; a live run followed by nobody here
    until a few seconds of silence; a finished run to its end. `batch_size` is passed to the
    server's resume (frames per page of the stored replay).
    """
    from .connection import current

    return current().chunks_frame(run_id, batch_size=batch_size)


def usage_frame(
    run_ids: Iterable[str] | None = None, agent: str | None = None, limit: int = 100
) -> pd.DataFrame:
    """Token usage per run: the given runs, else the `limit` newest (of `agent`)."""
    from .connection import current

    return current().usage_frame(run_ids, agent=agent, limit=limit)


def conversations_frame(agent: str | None = None, limit: int = 100) -> pd.DataFrame:
    """An agent's conversations (default: the session's agent), newest first."""
    from .connection import current

    return current().conversations_frame(agent, limit=limit)


def agents_frame() -> pd.DataFrame:
    """The current server's agents: name, id, model, creation time (UTC)."""
    from .connection import current

    return current().agents_frame()


def load_ipython_extension(ipython: Any) -> None:
    from . import magics

    magics.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from . import magics

    unloader = getattr(magics, "unload_ipython_extension", None)
    if unloader is not None:
        unloader(ipython)
