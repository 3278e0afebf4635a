"""A RunHandle shows one live view however often it is displayed; outside a kernel, text."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from frontend_fakes import FakeChain

import letta_nb.handle as handle_mod
from letta_nb.handle import RunHandle


def make_handle() -> tuple[RunHandle, FakeChain]:
    chain = FakeChain()
    session: Any = SimpleNamespace(
        agent_name=lambda agent_id: "demo-analyst", conversation_label=lambda cid: None
    )
    return RunHandle(session, chain, key="key:test"), chain  # type: ignore[arg-type]


def test_repeated_reprs_share_one_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("IPython.get_ipython", lambda: SimpleNamespace(kernel=object()))
    handle, chain = make_handle()
    first = handle_mod._widget_bundle(handle)
    second = handle_mod._widget_bundle(handle)
    assert first is not None and second is not None
    assert (
        first["application/vnd.jupyter.widget-view+json"]
        == (second["application/vnd.jupyter.widget-view+json"])
    )
    assert len(chain._listeners) == 1, "a second repr must not wire a second view"
    view = handle._view
    view.close()
    handle_mod._widget_bundle(handle)
    assert handle._view is not view, "a closed view is replaced"


def test_outside_a_kernel_the_handle_is_text_and_static_html(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
    handle, chain = make_handle()
    chain.say("Revenue is **up** <img src=x onerror=alert(1)>")
    chain.stop()
    bundle = handle._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"].startswith("completed · run run-1\nRevenue is **up**")
    html = bundle["text/html"]
    assert "demo-analyst · completed · 42 tokens" in html and "<strong>up</strong>" in html
    assert "<img" not in html and "&lt;img" in html
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    handle._ipython_display_()
    assert shown == [(bundle, {"raw": True})]
