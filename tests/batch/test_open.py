"""Starting or re-attaching a batch: bad arguments are one line, a key re-attaches only to the
very items it holds, rows appended under an explicit key are sent, a live batch is reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from letta_nb.core.errors import ConfigurationError
from letta_nb.session import Session
from tests.batch.batch_helpers import BOUND, make_session


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"concurrency": 0}, "concurrency must be 1..256"),
        ({"concurrency": 2.5}, "concurrency must be a whole number"),
        ({"concurrency": True}, "concurrency must be a whole number"),
        ({"timeout": -1}, "timeout must be a positive, finite number"),
        ({"timeout": float("inf")}, "timeout must be a positive, finite number"),
        ({"policy": "maybe"}, "policy must be 'approve', 'deny' or a callable"),
        ({"key": ""}, "key must be a non-empty string"),
    ],
)
def test_bad_arguments_are_one_line_and_send_nothing(
    session: Session, kw: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        session.map(["/long 2"], **kw)
    assert says in str(err.value)
    assert session.batches() == [] and session.backend.list_runs(agent_id=session.agent["id"]) == []


def test_an_unknown_agent_is_one_line(session: Session) -> None:
    with pytest.raises(Exception) as err:
        session.map(["/long 2"], agent="no-such-agent")
    assert "unknown agent 'no-such-agent'" in str(err.value)


def test_the_same_call_in_this_kernel_is_the_same_batch(session: Session) -> None:
    df = pd.DataFrame({"n": [2, 3]})
    first = session.map(df, "/long {n}")
    assert session.map(df, "/long {n}") is first
    other = session.map(df, "/long {n} 1")  # another template: another batch
    assert other is not first and other.key != first.key
    first.wait(BOUND)
    other.wait(BOUND)


def test_a_key_holds_its_items_and_grows_with_appended_rows(
    session: Session, tmp_path: Path, embedded_server: str
) -> None:
    rows = ["/long 2", "/long 3"]
    batch = session.map(rows, key="mine")
    assert batch.wait(BOUND) == "done"
    fresh = make_session(embedded_server, tmp_path / "cursors.db")
    fresh.agent = session.agent
    with pytest.raises(ConfigurationError) as err:
        fresh.map(["/long 2", "/long 9"], key="mine")
    assert "item 1 (1) differs from the one batch batch:key:mine holds" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        fresh.map(["/long 2"], key="mine")
    assert "holds 2 items, this input has 1" in str(err.value)
    grown = fresh.map([*rows, "/long 4"], key="mine")  # a new row: only it is sent
    assert grown.wait(BOUND) == "done" and grown.counts == {"completed": 3}
    assert len(fresh.backend.list_runs(agent_id=session.agent["id"])) == 3
    with pytest.raises(ConfigurationError) as err:
        session.map([*rows, "/long 4", "/long 5"], key="mine")  # live here with 2 items
    assert "is running 2 items here" in str(err.value)


def test_a_key_belongs_to_its_agent(session: Session, tmp_path: Path, embedded_server: str) -> None:
    session.map(["/long 2"], key="agents").wait(BOUND)
    other = session.backend.create_agent(f"{session.agent['name']}-2")
    fresh = make_session(embedded_server, tmp_path / "cursors.db")
    fresh.agent = fresh._remember(other)
    with pytest.raises(ConfigurationError) as err:
        fresh.map(["/long 2"], key="agents")
    assert f"runs on agent {session.agent['id']}" in str(err.value)
