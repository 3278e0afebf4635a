"""A RunHandle shows one live view however often it is displayed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from frontend_fakes import FakeFollower

import letta_nb.handle as handle_mod
from letta_nb.handle import RunHandle


def test_repeated_reprs_share_one_view(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = SimpleNamespace(kernel=object())
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    follower: Any = FakeFollower()
    session: Any = SimpleNamespace(agent_name=lambda agent_id: "demo-analyst")
    handle = RunHandle(session, follower, key="key:test")
    first = handle_mod._widget_bundle(handle)
    second = handle_mod._widget_bundle(handle)
    assert first is not None and second is not None
    assert len(follower._listeners) == 1, "a second repr must not wire a second view"
    view = handle._view
    view.close()
    handle_mod._widget_bundle(handle)
    assert handle._view is not view, "a closed view is replaced"
