"""The `Batch` front: counts, summary and the saved-notebook copy, labels and positions, one
item's run chain (live, or read again from the server once the item is over)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from letta_nb.core.errors import ConfigurationError
from letta_nb.session import Session
from tests.batch.batch_helpers import BOUND


def test_counts_summary_and_static_copy(session: Session) -> None:
    df = pd.DataFrame({"q": ["/long 3", "/fail", "/long 2"]}, index=["<i>a</i>", "b", "c"])
    batch = session.map(df, "{q}", concurrency=3)
    assert batch.wait(BOUND) == "done"
    assert batch.counts == {"completed": 2, "failed": 1}
    assert batch.summary() == "3 items · 2 completed · 1 failed"
    assert repr(batch).endswith("3 items · 2 completed · 1 failed>") and batch.key in repr(batch)
    assert batch.done == 3 and batch.eta == 0.0 and batch.tokens > 0
    html = batch.static_html()
    assert "<i>a</i>" not in html and "&lt;i&gt;a&lt;/i&gt;" in html  # escaped
    assert "Simulated upstream LLM failure" in html and "3 items · 2 completed" in html
    bundle = batch._repr_mimebundle_()
    assert bundle["text/plain"] == "batch done · 3 items · 2 completed · 1 failed"
    frame_html = batch.frame._repr_html_()
    assert "token1 token2 token3" in frame_html and type(batch.frame[["answer"]]) is pd.DataFrame


def test_labels_positions_and_one_items_chain(session: Session) -> None:
    df = pd.DataFrame({"q": ["/long 3", "/long 4", "/long 5"]}, index=["a", "b", "b"])
    batch = session.map(df, "{q}", concurrency=1)
    assert batch.position("a") == 0
    with pytest.raises(ConfigurationError, match="no item has the label 'z'"):
        batch.position("z")
    with pytest.raises(ConfigurationError, match="is not unique"):
        batch.item("b")
    assert batch.wait(BOUND) == "done"
    handle = batch.item("a")  # over: its run is read again from the server
    assert handle.wait(BOUND) == "completed"
    assert handle.transcript.startswith("token1 token2 token3")
    assert handle.run_id == batch.frame.run_id["a"]
    with pytest.raises(ConfigurationError, match="outside the batch"):
        batch.item_at(7)
    with pytest.raises(ConfigurationError, match="timeout must be a number"):
        batch.wait(math.nan)


def test_an_unsent_item_has_no_chain_yet(session: Session) -> None:
    batch = session.map(["/long 200 20", "/long 2"], concurrency=1)
    with pytest.raises(ConfigurationError, match="has no run yet"):
        batch.item_at(1)
    batch.cancel()
    batch.wait(BOUND)
