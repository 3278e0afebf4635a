"""letta_nb: Letta background runs with resumable streaming, first-class in Jupyter.

`import letta_nb` stays light: the SDK, pandas and ipywidgets load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .handle import RunHandle
    from .session import Session

__all__ = [
    "__version__",
    "attach",
    "chunks_frame",
    "connect",
    "load_ipython_extension",
    "runs_frame",
    "send",
    "unload_ipython_extension",
    "usage_frame",
]

_FRAMES = ("runs_frame", "chunks_frame", "usage_frame")


def connect(base_url: str | None = None, api_key: str | None = None, **kw: Any) -> Session:
    """Connect (explicit → LETTA_BASE_URL/LETTA_API_KEY → embedded server) and make it current."""
    from .session import connect as _connect

    return _connect(base_url, api_key, **kw)


def send(message: str, agent: str | None = None, **kw: Any) -> RunHandle:
    """Send `message` with the current session; see `Session.send`."""
    from .session import current

    return current().send(message, agent, **kw)


def attach(
    run_id: str, starting_after: int = 0, *, batch_size: int | None = None, **kw: Any
) -> RunHandle:
    """Follow an existing run from `starting_after` (exclusive); `batch_size` → the resume.

    A run this kernel already follows (e.g. detached) continues from its own cursor.
    """
    from .session import current

    return current().attach(run_id, starting_after, batch_size=batch_size, **kw)


def load_ipython_extension(ipython: Any) -> None:
    from . import magics

    magics.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from . import magics

    unloader = getattr(magics, "unload_ipython_extension", None)
    if unloader is not None:
        unloader(ipython)


def __getattr__(name: str) -> Any:
    if name in _FRAMES:
        from . import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'letta_nb' has no attribute {name!r}")
