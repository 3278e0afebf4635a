"""Shared fixtures: the recorded Letta traffic and an embedded server."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Recorded traffic of the real Letta 0.16.8 server (tests/fixtures/README.md says where from).
GOLDEN_DIR = REPO_ROOT / "tests" / "fixtures" / "letta-golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "README.md").is_file():  # part of the repo: missing data is a failure
        pytest.fail(f"the recorded Letta traffic is missing from {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """base_url of an in-process embedded server on a temporary database."""
    from letta_nb.server import start_in_process  # a broken server import fails the test

    db = tmp_path_factory.mktemp("embedded-server") / "server.sqlite3"
    server = start_in_process(db)
    try:
        yield server.base_url
    finally:
        server.stop()


#: What an isolation check needs of one batch item: (message, conversation id, answer, runs).
BatchItem = tuple[str, str | None, str | None, list[str]]


@pytest.fixture(scope="session")
def check_isolation() -> Callable[[str, str, Sequence[BatchItem]], None]:
    """Asserts through letta-client (not through letta_nb) that a batch's agent has exactly one
    conversation per item and that each holds only its own item: its one user message, its
    runs and nothing else, its answer."""
    return _check_isolation


def _check_isolation(base_url: str, agent_id: str, items: Sequence[BatchItem]) -> None:
    from letta_client import Letta

    from letta_nb.protocol import MessageType, content_text

    client = Letta(base_url=base_url, max_retries=0)
    convs = client.conversations.list(agent_id=agent_id, limit=max(100, 2 * len(items)))
    assert len(convs) == len(items), f"{len(convs)} conversations for {len(items)} items"
    assert {c.id for c in convs} == {conv for _m, conv, _a, _r in items}
    for message, conv, answer, runs in items:
        assert conv is not None
        msgs = client.conversations.messages.list(conv, order="asc", limit=1000).items
        said = [content_text(m.content) for m in msgs if m.message_type == MessageType.USER]
        assert said == [message], f"{conv}: {said} for {message!r}"
        turns = [m for m in msgs if m.message_type != MessageType.SYSTEM]
        assert {m.run_id for m in turns} == set(runs), f"{conv}: another item's runs"
        answers = [content_text(m.content) for m in msgs if m.message_type == MessageType.ASSISTANT]
        assert "\n\n".join(answers) == (answer or ""), f"{conv}: {answers} != {answer!r}"
        listed = client.runs.list(conversation_id=conv, limit=100).items
        assert sorted(r.id for r in listed) == sorted(runs)
