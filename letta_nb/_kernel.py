"""Kernel plumbing, isolated: everything that needs `get_ipython()` or the kernel's parent header.

Front ends call these few functions instead of touching IPython directly, so tests can patch
one module (`letta_nb._kernel.get_ipython`) and the rest runs in plain pytest.

Why the parent matters (see jupyter-engineering §2a): on ipykernel 7 a background thread's
output and comm messages go to whichever cell is executing *now*; capturing the starting
cell's parent and re-entering it in the worker keeps a run's updates in its own cell.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


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
    return parent if isinstance(parent, Mapping) and parent else None


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
    return CellIdentity(notebook=notebook_path() if cell_id else None,
                        cell_id=str(cell_id) if cell_id else None)


@contextlib.contextmanager
def thread_parent(parent: Mapping[str, Any] | None) -> Iterator[None]:
    """Within this block, this thread's display/stream output belongs to `parent`.

    Uses `set_thread_parent` (ipykernel >= 7.4) which leaves the global fallback alone; on older
    kernels the caller's copied context (see `ParentContext`) already carries the parent.
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


class ParentContext:
    """A cell's contextvars + parent header, captured in the cell, re-entered by a worker.

    `copy_context()` carries ipykernel's `_shell_parent` contextvar, which is what the comm
    layer reads for the parent of widget updates (6.31 and 7.4); `thread_parent` covers
    stream/display output on 7.4. One worker thread at a time may `run` a given instance.
    """

    __slots__ = ("_ctx", "parent")

    def __init__(self, parent: Mapping[str, Any] | None = None) -> None:
        self.parent = dict(parent) if parent else current_parent()
        self._ctx = contextvars.copy_context()

    @property
    def msg_id(self) -> str | None:
        return parent_msg_id(self.parent)

    def run(self, fn: Callable[[], T]) -> T:
        def inner() -> T:
            with thread_parent(self.parent):
                return fn()

        return self._ctx.run(inner)


def user_ns() -> dict[str, Any] | None:
    ip = get_ipython()
    ns = getattr(ip, "user_ns", None) if ip is not None else None
    return ns if isinstance(ns, dict) else None
