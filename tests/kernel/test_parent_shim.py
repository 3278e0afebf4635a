"""The ipykernel 6 comm-parent shim in `letta_nb._kernel`, on stand-in kernels (no real kernel).

The real-kernel proof is test_kernel_routing.py[ipykernel-6.31]; these pin the shim's contract:
only code run through `ParentContext.run` sees the starting cell, the kernel's global parent
is never written, and ipykernel 7 kernels (context-local parents) are left untouched.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest

from letta_nb import _kernel

CELL_A = {"header": {"msg_id": "cell-a"}, "metadata": {}, "content": {}}
CELL_B = {"header": {"msg_id": "cell-b"}, "metadata": {}, "content": {}}


class Kernel6:
    """ipykernel 6.31's parent bookkeeping: one global parent per channel."""

    def __init__(self) -> None:
        self._parents: dict[str, dict[str, Any]] = {"shell": {}, "control": {}}

    def set_parent(self, ident: bytes, parent: dict[str, Any], channel: str = "shell") -> None:
        self._parents[channel] = parent

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        return self._parents.get(channel or "shell", {})


class Kernel7(Kernel6):
    """ipykernel 7: the shell parent lives in a contextvar."""

    def __init__(self) -> None:
        super().__init__()
        self._shell_parent: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
            "shell_parent"
        )


class Shell:
    def __init__(self, kernel: Kernel6) -> None:
        self.kernel = kernel

    def get_parent(self) -> dict[str, Any]:
        return self.kernel.get_parent()


def in_thread(fn: Any) -> Any:
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn()))
    worker.start()
    worker.join(10)
    assert box, "worker did not finish"
    return box[0]


def test_ipykernel6_comm_parent_follows_the_starting_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = Kernel6()
    monkeypatch.setattr(_kernel, "get_ipython", lambda: Shell(kernel))
    kernel.set_parent(b"", CELL_A)
    ctx = _kernel.ParentContext()  # captured while cell A executes
    assert ctx.msg_id == "cell-a"
    kernel.set_parent(b"", CELL_B)  # cell B executes now

    assert in_thread(lambda: ctx.run(kernel.get_parent)) == CELL_A
    assert in_thread(lambda: ctx.run(lambda: kernel.get_parent("control"))) == {}
    assert in_thread(kernel.get_parent) == CELL_B  # other threads: the global, unchanged
    assert kernel.get_parent() == CELL_B and kernel._parents["shell"] == CELL_B

    shim = kernel.get_parent
    _kernel.ParentContext()  # a second view installs nothing new
    assert kernel.get_parent is shim


def test_ipykernel7_kernel_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = Kernel7()
    original = kernel.get_parent
    monkeypatch.setattr(_kernel, "get_ipython", lambda: Shell(kernel))
    kernel.set_parent(b"", CELL_A)
    _kernel.ParentContext()
    assert kernel.get_parent == original
    assert "get_parent" not in vars(kernel)
