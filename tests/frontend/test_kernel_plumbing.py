"""_kernel: cell identity from the parent header, notebook path, parent capture (mocked shell)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from letta_nb import _kernel
from letta_nb.core.cursor import cell_key


class FakeShell:
    def __init__(self, parent: dict[str, Any]) -> None:
        self.parent = parent
        self.kernel = object()
        self.user_ns: dict[str, Any] = {}
        self.thread_parents: list[Any] = []

    def get_parent(self) -> dict[str, Any]:
        return self.parent

    def set_thread_parent(self, parent: dict[str, Any]) -> str:
        self.thread_parents.append(parent["header"]["msg_id"])
        return "token"

    def reset_thread_parent(self, token: str) -> None:
        self.thread_parents.append(("reset", token))


LAB_PARENT = {"header": {"msg_id": "m-1"}, "metadata": {"cellId": "c-42"}}


def test_cell_identity_from_jupyterlab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_kernel, "get_ipython", lambda: FakeShell(LAB_PARENT))
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/analysis.ipynb")
    ident = _kernel.cell_identity()
    assert ident == _kernel.CellIdentity("/home/u/analysis.ipynb", "c-42")
    assert _kernel.in_kernel()
    key = cell_key(notebook=ident.notebook, cell_id=ident.cell_id, agent="a", source="x")
    assert key == "cell:/home/u/analysis.ipynb:c-42"


def test_notebook_path_from_session_global(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = FakeShell(LAB_PARENT)
    shell.user_ns["__session__"] = "nb/other.ipynb"
    monkeypatch.setattr(_kernel, "get_ipython", lambda: shell)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert _kernel.cell_identity().notebook == "nb/other.ipynb"


def test_no_cell_id_under_nbclient_or_outside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _kernel, "get_ipython", lambda: FakeShell({"header": {"msg_id": "m"}, "metadata": {}})
    )
    assert _kernel.cell_identity() == _kernel.CellIdentity(None, None)
    monkeypatch.setattr(_kernel, "get_ipython", lambda: None)
    assert _kernel.cell_identity() == _kernel.CellIdentity(None, None)
    assert not _kernel.in_kernel() and _kernel.current_parent() is None


def test_parent_context_reenters_the_cells_parent_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell = FakeShell(LAB_PARENT)
    monkeypatch.setattr(_kernel, "get_ipython", lambda: shell)
    ctx = _kernel.ParentContext()
    assert ctx.msg_id == "m-1"
    shell.parent = {"header": {"msg_id": "m-2"}}  # another cell is executing now
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(ctx.run(lambda: 7)))
    worker.start()
    worker.join(5)
    assert out == [7]
    assert shell.thread_parents == ["m-1", ("reset", "token")]
