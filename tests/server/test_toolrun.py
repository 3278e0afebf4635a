"""Custom tools (source posted to /v1/tools/) run in a child process, never in the server: with
the agent's folder as working directory, a time limit and no server credentials. A tool that
hangs, crashes or raises fails its own call; the server and the agent carry on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from letta_client import Letta

from letta_nb.server import EmbeddedServer, start_in_process
from tests.server.scripted_brain import HANDLE, ScriptedBrain
from tests.server.server_helpers import bg

SECRET = "sk-letta-nb-FAKE-tool-env-0123456789"
TOOLS = {
    "where": (
        "import json, os\n"
        "def where(target: str, reason: str) -> str:\n"
        "    return json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(),\n"
        "                       'token': os.environ.get('LETTA_NB_SERVER_TOKEN')})\n"
    ),
    "hang": "import time\ndef hang(target: str, reason: str) -> str:\n    time.sleep(3600)\n",
    "quit": "import os\ndef quit(target: str, reason: str) -> str:\n    os._exit(3)\n",
    "segv": (
        "import ctypes\n"
        "def segv(target: str, reason: str) -> str:\n"
        "    return ctypes.string_at(0)\n"
    ),
    "fail": "def fail(target: str, reason: str) -> str:\n    raise KeyError(target)\n",
    "report": (
        "from pathlib import Path\n"
        "def report(target: str, reason: str, workdir: str) -> str:\n"
        "    Path(workdir, 'note.txt').write_text(target + reason)\n"
        "    return workdir\n"
    ),
    "noisy": (
        "import sys\n"
        "def noisy(target: str, reason: str) -> dict:\n"
        "    print('to stdout'); print('to stderr', file=sys.stderr)\n"
        "    return {'target': target}\n"
    ),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    brain = ScriptedBrain()
    os.environ["LETTA_NB_SERVER_TOKEN"] = SECRET  # as if the server had it in its environment
    try:
        with start_in_process(
            tmp_path_factory.mktemp("tools") / "s.sqlite3",
            brains={brain.handle: brain},
            tool_timeout=5.0,  # generous: a loaded machine starts Python slowly
        ) as s:
            yield s
    finally:
        os.environ.pop("LETTA_NB_SERVER_TOKEN", None)


@pytest.fixture(scope="module")
def agent(srv: EmbeddedServer) -> tuple[Letta, str]:
    c = Letta(base_url=srv.base_url, max_retries=0, timeout=60)
    ids = [c.tools.create(source_code=src).id for src in TOOLS.values()]
    return c, c.agents.create(model=HANDLE, tool_ids=ids).id


def _call(agent: tuple[Letta, str], name: str) -> tuple[str, str]:
    client, agent_id = agent
    got = bg(client, agent_id, f"custom {name}")
    assert got[-2].stop_reason == "end_turn"  # the run itself always completes
    ret = next(c for c in got if c.message_type == "tool_return_message")
    return ret.status, ret.tool_return


def test_a_custom_tool_runs_in_a_child_in_the_agent_folder_without_secrets(
    srv: EmbeddedServer, agent: tuple[Letta, str]
) -> None:
    status, text = _call(agent, "where")
    seen = json.loads(text)
    assert status == "success"
    assert seen["pid"] != os.getpid()  # not the server's process
    assert Path(seen["cwd"]) == (srv.db_path.parent / "workdirs" / agent[1]).resolve()
    assert seen["token"] is None


def test_the_workdir_parameter_is_filled_in(srv: EmbeddedServer, agent: tuple[Letta, str]) -> None:
    status, text = _call(agent, "report")
    assert status == "success" and (Path(text) / "note.txt").read_text() == "xy"


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("hang", "timed out after 5 s"),
        ("quit", "exited with code 3"),
        ("segv", "exited with code -11"),
        ("fail", "KeyError: 'x'"),
    ],
)
def test_a_broken_tool_fails_its_call_not_the_server(
    agent: tuple[Letta, str], name: str, expect: str
) -> None:
    status, text = _call(agent, name)
    assert status == "error" and expect in text and "\n" not in text
    assert _call(agent, "where")[0] == "success"  # the server goes on


def test_prints_do_not_corrupt_the_result(agent: tuple[Letta, str]) -> None:
    assert _call(agent, "noisy") == ("success", '{"target": "x"}')
