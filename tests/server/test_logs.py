"""The server log: a 4xx is one line (no traceback, no token), the file is private and rotates
(size-bounded), in the real launched server process."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from letta_nb.server import logs
from letta_nb.server.launcher import ensure_server, stop_server


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("letta_nb.server").level)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("letta_nb.server").setLevel(saved[2])
        logging.captureWarnings(False)


def test_the_log_rotates_and_stays_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setattr(logs, "LOG_MAX_BYTES", 10_000)
    path = tmp_path / "server.log"
    logs.configure(path)
    log = logging.getLogger("letta_nb.server.requests")
    for i in range(2000):
        log.info("POST /v1/agents/ -> 422 request %d", i)
    files = sorted(tmp_path.glob("server.log*"))
    assert [f.name for f in files] == ["server.log", *(f"server.log.{i}" for i in (1, 2, 3))]
    assert all(f.stat().st_size <= 10_000 for f in files)  # bounded: 4 files of 10 kB
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_a_4xx_is_one_line_in_the_launched_servers_log(tmp_path: Path) -> None:
    state = tmp_path / "server"
    info = ensure_server(state)
    try:
        auth = {"Authorization": f"Bearer {info.token}"}
        bad = [
            httpx.post(info.base_url + "/v1/agents/", json={"name": 5}, headers=auth),
            httpx.post(info.base_url + "/v1/agents/", content=b"{}", headers={**auth}),
            httpx.get(info.base_url + "/v1/agents/agent-missing", headers=auth),
            httpx.get(info.base_url + "/v1/agents/", headers={**auth, "Host": "evil.example"}),
            httpx.get(info.base_url + "/v1/agents/"),
        ]
        assert [r.status_code for r in bad] == [422, 415, 404, 403, 401]
    finally:
        stop_server(state)
    text = (state / "server.log").read_text()
    lines = [line for line in text.splitlines() if " -> 4" in line]
    assert len(lines) == 5, text
    assert "Traceback" not in text and info.token not in text
