"""Shared fixtures: the recorded Letta traffic and an embedded server."""

from __future__ import annotations

from collections.abc import Iterator
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
