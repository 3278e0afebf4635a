"""Kernel plumbing, isolated: everything that needs `get_ipython()` or the kernel's parent header.

Front ends call these few functions instead of touching IPython directly, so tests can patch
one module (`letta_nb._kernel.get_ipython`) and the rest runs in plain pytest.

Why the parent matters (ipykernel PRs #1186, #1451, #1546): a background thread's output and comm
messages go to whichever cell is executing *now* unless the thread says otherwise (stream
output on ipykernel 7; comm messages on ipykernel 6, whose `Kernel.get_parent()` reads one
global per channel). Capturing the starting cell's parent and re-entering it in the worker
(`ParentContext`) keeps a run's updates in its own cell on 6.31 and 7.4.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: The starting cell's parent while `ParentContext.run` executes worker code in this context;
#: read by the ipykernel 6 `get_parent` shim (see `_route_comm_parent`).
_cell_parent: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "letta_nb_cell_parent", default=None
)


def get_ipython() -> Any | None:
    """The running InteractiveShell, or None outside IPython."""
    try:
        from IPython import get_ipython as _get
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return _get()


def in_kernel() -> bool:
    """True inside a Jupyter kernel (a ZMQ shell with a kernel attached), not plain IPython."""
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def current_parent() -> dict[str, Any] | None:
    """The execute_request being handled right now (header, metadata, content), if any."""
    ip = get_ipython()
    getter = getattr(ip, "get_parent", None) if ip is not None else None
    if getter is None:
        return None
    try:
        parent = getter()
    except Exception:  # a shell without a parent header (terminal IPython variants)
        return None
    return dict(parent) if isinstance(parent, Mapping) and parent else None


def parent_msg_id(parent: Mapping[str, Any] | None) -> str | None:
    header = (parent or {}).get("header") or {}
    msg_id = header.get("msg_id") if isinstance(header, Mapping) else None
    return str(msg_id) if msg_id else None


@dataclass(frozen=True, slots=True)
class CellIdentity:
    """Where a cell lives: JupyterLab's cellId and the notebook path (both None under nbclient)."""

    notebook: str | None
    cell_id: str | None


def notebook_path() -> str | None:
    """The notebook's path: `JPY_SESSION_NAME` (Jupyter server) or the `__session__` global."""
    env = os.environ.get("JPY_SESSION_NAME")
    if env:
        return env
    ip = get_ipython()
    ns = getattr(ip, "user_ns", None) if ip is not None else None
    session = ns.get("__session__") if isinstance(ns, Mapping) else None
    return str(session) if session else None


def cell_identity(parent: Mapping[str, Any] | None = None) -> CellIdentity:
    """Identity of the executing cell; cellId only exists when JupyterLab sent it."""
    if parent is None:
        parent = current_parent()
    meta = (parent or {}).get("metadata") or {}
    cell_id = meta.get("cellId") if isinstance(meta, Mapping) else None
    return CellIdentity(
        notebook=notebook_path() if cell_id else None, cell_id=str(cell_id) if cell_id else None
    )


@contextlib.contextmanager
def thread_parent(parent: Mapping[str, Any] | None) -> Iterator[None]:
    """Within this block, this thread's display/stream output belongs to `parent`.

    Uses `set_thread_parent` (ipykernel >= 7.4) which leaves the global fallback alone; on
    ipykernel 6 the caller's copied context (see `ParentContext`) already carries the stream
    parent. Never `set_parent`: in a thread it also moves the kernel's global fallback.
    """
    ip = get_ipython()
    setter = getattr(ip, "set_thread_parent", None) if ip is not None else None
    resetter = getattr(ip, "reset_thread_parent", None) if ip is not None else None
    if not parent or setter is None or resetter is None:
        yield
        return
    tokens = setter(dict(parent))
    try:
        yield
    finally:
        resetter(tokens)


def _route_comm_parent(kernel: Any) -> None:
    """ipykernel 6: let `kernel.get_parent()` answer the cell parent `ParentContext` set.

    Comm messages (every widget update) take their parent from `Kernel.get_parent()`. On
    ipykernel 7 that reads the `_shell_parent` contextvar, which `copy_context()` carries. On
    ipykernel 6 it reads `kernel._parents["shell"]`, a global naming the cell executing *now*,
    so a run's widget updates were attributed to whatever other cell was running (measured on
    6.31 by tests/kernel). The shim wraps this kernel instance's `get_parent`: inside
    `ParentContext.run` it returns the starting cell's parent, everywhere else (all kernel
    code, other threads) it defers to the original. The global parent is never written.
    """
    if kernel is None or isinstance(getattr(kernel, "_shell_parent", None), contextvars.ContextVar):
        return  # ipykernel 7: already context-local
    original = getattr(kernel, "get_parent", None)
    if original is None or getattr(original, "_letta_nb_shim", False):
        return

    def get_parent(channel: str | None = None) -> Any:
        parent = _cell_parent.get()
        if parent is not None and channel in (None, "shell"):
            return parent
        return original(channel)

    get_parent._letta_nb_shim = True  # type: ignore[attr-defined]
    kernel.get_parent = get_parent


class ParentContext:
    """A cell's contextvars + parent header, captured in the cell, re-entered by a worker.

    `copy_context()` carries ipykernel's parent contextvars (comm parent on 7.4, stream parent
    on 6.31 and 7.4); `thread_parent` covers stream/display output on 7.4 and
    `_route_comm_parent` the comm parent on 6.31. One worker thread at a time may `run` a
    given instance.
    """

    __slots__ = ("_ctx", "parent")

    def __init__(self, parent: Mapping[str, Any] | None = None) -> None:
        self.parent = dict(parent) if parent else current_parent()
        if self.parent:
            ip = get_ipython()
            _route_comm_parent(getattr(ip, "kernel", None) if ip is not None else None)
        self._ctx = contextvars.copy_context()

    @property
    def msg_id(self) -> str | None:
        return parent_msg_id(self.parent)

    def run(self, fn: Callable[[], T]) -> T:
        def inner() -> T:
            token = _cell_parent.set(self.parent) if self.parent else None
            try:
                with thread_parent(self.parent):
                    return fn()
            finally:
                if token is not None:
                    _cell_parent.reset(token)

        return self._ctx.run(inner)


def user_ns() -> dict[str, Any] | None:
    ip = get_ipython()
    ns = getattr(ip, "user_ns", None) if ip is not None else None
    return ns if isinstance(ns, dict) else None
