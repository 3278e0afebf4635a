"""Batch tests run against the in-process embedded server; each test gets its own agent (so its
runs are countable on the server) and its own cursor store (a "kernel restart" is a new
Session over the same file)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from letta_nb.session import Session
from tests.batch.batch_helpers import Recorder, make_session


@pytest.fixture()
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture()
def session(embedded_server: str, tmp_path: Path, recorder: Recorder) -> Iterator[Session]:
    s = make_session(embedded_server, tmp_path / "cursors.db", recorder)
    s.agent = s._remember(s.backend.create_agent(f"batch-{uuid.uuid4().hex[:10]}"))
    yield s
    for b in s.batches():
        b.detach()
    s.store.close()


@pytest.fixture()
def runs_of(session: Session) -> Callable[[], list[dict[str, Any]]]:
    """The test agent's runs on the server."""
    assert session.agent is not None
    agent_id = session.agent["id"]
    return lambda: session.backend.list_runs(agent_id=agent_id, limit=1000)
