"""Item identities: the same call finds the same batch; a repeated send carries the same otid,
a deliberate retry a new one."""

from __future__ import annotations

import pandas as pd

from letta_nb.batch.keys import batch_key, explicit_key, item_digest, item_otid, label_text


def test_an_items_otid_is_fixed_per_attempt_and_new_for_a_retry() -> None:
    key = batch_key("agent-1", "{q}", [item_digest(0, "a")])
    assert item_otid(key, 3, 0) == item_otid(key, 3, 0)
    assert item_otid(key, 3, 0) != item_otid(key, 3, 1)  # retry(): a new attempt
    assert item_otid(key, 3, 0) != item_otid(key, 4, 0)
    assert item_otid(key, 0, 0).startswith("otid-") and len(item_otid(key, 0, 0)) == 41


def test_the_key_changes_with_agent_template_message_label_and_order() -> None:
    digests = [item_digest("a", "x"), item_digest("b", "y")]
    base = batch_key("agent-1", "{q}", digests)
    assert base == batch_key("agent-1", "{q}", list(digests))
    assert base != batch_key("agent-2", "{q}", digests)
    assert base != batch_key("agent-1", "Q: {q}", digests)
    assert base != batch_key("agent-1", "{q}", digests[::-1])
    assert base != batch_key("agent-1", "{q}", [item_digest("a", "x"), item_digest("c", "y")])
    assert base != batch_key("agent-1", "{q}", [item_digest("a", "x"), item_digest("b", "z")])
    assert explicit_key("mine") != base and explicit_key("mine").startswith("batch:key:")


def test_labels_have_a_stable_text() -> None:
    assert label_text(3) == "3" and label_text("3") == '"3"'  # an int and a str differ
    assert label_text(("Airport", 2)) == label_text(("Airport", 2))
    assert label_text(pd.Timestamp("2024-03-01")) == '"2024-03-01 00:00:00"'
    assert item_digest(3, "m") != item_digest("3", "m")
