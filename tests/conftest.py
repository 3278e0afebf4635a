"""Shared fixtures: the golden recordings and an embedded server (when it exists)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT.parent / "shared" / "letta-golden"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
_HELPERS = str(Path(__file__).resolve().parent / "core")
if _HELPERS not in sys.path:  # lnb_golden: the pure SSE reader shared by core and client tests
    sys.path.insert(0, _HELPERS)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        pytest.skip(
            f"golden recordings not found at {GOLDEN_DIR} (expected ../shared/"
            "letta-golden next to the repo)"
        )
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """base_url of an in-process embedded server on a temporary database."""
    server_mod = pytest.importorskip("letta_nb.server")
    start = getattr(server_mod, "start_in_process", None)
    if start is None:
        pytest.skip("letta_nb.server.start_in_process is not available yet")
    db = tmp_path_factory.mktemp("embedded-server") / "server.sqlite3"
    server = start(db)
    try:
        yield server.base_url
    finally:
        server.stop()
