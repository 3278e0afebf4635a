"""Kernel tests: the embedded server lives in the test process, so it outlives kernel restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_harness import Kernel, make_kernel


@pytest.fixture(scope="session")
def kernel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from letta_nb.server import start_in_process

    srv = start_in_process(tmp_path_factory.mktemp("lnb-kserver") / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def kernel(kernel_server: Any, tmp_path: Path) -> Iterator[Kernel]:
    state = tmp_path / "state"
    state.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LETTA_", "JPY_", "PYTEST_"))}
    env.update(LETTA_BASE_URL=kernel_server.base_url, LETTA_NB_STATE_DIR=str(state),
               PYTHONUNBUFFERED="1")
    k = make_kernel(tmp_path, env)
    k.start()
    try:
        yield k
    finally:
        k.stop()
