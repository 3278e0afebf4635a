"""Fixtures: an in-process server driven by the scripted test brain, and SDK clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from letta_client import Letta

from letta_nb.server import EmbeddedServer, start_in_process
from tests.server.scripted_brain import HANDLE, ScriptedBrain


@pytest.fixture(scope="session")
def brains() -> dict[str, ScriptedBrain]:
    brain = ScriptedBrain()
    return {brain.handle: brain}


@pytest.fixture(scope="session")
def server(brains: dict[str, ScriptedBrain]) -> Iterator[EmbeddedServer]:
    with start_in_process(brains=brains, keepalive_interval=20.0) as srv:
        yield srv


@pytest.fixture()
def client(server: EmbeddedServer) -> Letta:
    return Letta(base_url=server.base_url, max_retries=0, timeout=30.0)


@pytest.fixture()
def http(server: EmbeddedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as c:
        yield c


@pytest.fixture()
def agent_id(client: Letta) -> str:
    return client.agents.create(name="test agent", model=HANDLE).id


@pytest.fixture(scope="session")
def golden(golden_dir: Path) -> Path:
    return golden_dir
