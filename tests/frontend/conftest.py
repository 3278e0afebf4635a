"""One embedded server for the front-end tests, and a session connected to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from letta_nb.server import start_in_process

    state: Path = tmp_path_factory.mktemp("lnb-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETTA_NB_STATE_DIR", str(state))
        mp.delenv("LETTA_API_KEY", raising=False)
        srv = start_in_process(state / "server.sqlite3")
        mp.setenv("LETTA_BASE_URL", srv.base_url)
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture()
def session(server: Any) -> Any:
    import letta_nb

    return letta_nb.connect(server.base_url)
