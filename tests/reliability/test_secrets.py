"""A recognisable fake key never leaks: not in output, repr, saved notebook, log, error or file.

The key is both the embedded server's token and the client's API key. The magics run in
IPython's globalipapp (connect, a run, runs listing, errors with a wrong URL / wrong key), the
tutorials run in real kernels (nbclient) against the token-protected server, and everything a
user or a log collector could see is searched for the key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output
from nbclient import NotebookClient

import letta_nb
import letta_nb.connection
from letta_nb.backend import Backend
from letta_nb.core import errors
from letta_nb.server import start_in_process
from tests.reliability.rel_helpers import free_port

KEY = "sk-letta-nb-FAKE-0123456789abcdef"
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.timeout(900)


def _clean(text: str, what: str) -> None:
    assert KEY not in text, f"the API key leaked into {what}"
    assert KEY[8:] not in text, f"part of the API key leaked into {what}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = tmp_path_factory.mktemp("secrets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETTA_NB_STATE_DIR", str(state / "client"))
        srv = start_in_process(state / "server.sqlite3", token=KEY)
        mp.setenv("LETTA_API_KEY", KEY)
        mp.setenv("LETTA_BASE_URL", srv.base_url)
        try:
            yield srv
        finally:
            srv.stop()


def test_magics_reprs_logs_errors_and_files(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    shell = globalipapp.get_ipython()
    shell.extension_manager.load_extension("letta_nb")
    seen: list[str] = []
    try:
        for source in (
            "%letta connect",
            "%letta status",
            "%%letta --wait --out h\n/long 5",
            "%%letta --wait\n/tool",
            "%letta runs --limit 5",
            "%letta agents",
            "%letta agent demo-analyst",
            "%letta connect http://127.0.0.1:9",
            "%letta connect " + server.base_url,
        ):
            with capture_output() as cap:
                result = shell.run_cell(source)
            seen += [cap.stdout, cap.stderr, repr(result.result)]
            for out in cap.outputs:
                seen += [str(v) for v in out.data.values()]
        handle = shell.user_ns["h"]
        assert handle.status == "completed"
        session = letta_nb.connection.current()
        seen += [
            repr(session),
            repr(session.backend),
            repr(handle),
            repr(handle.follower),
            str(handle._repr_mimebundle_()),
            handle.transcript,
            repr(handle.cursor),
        ]
    finally:
        shell.extension_manager.unload_extension("letta_nb")
    # errors: a wrong URL and a wrong key, with the real key configured
    for fn in (
        lambda: Backend(f"http://127.0.0.1:{free_port()}", KEY, max_retries=0).health(),
        lambda: letta_nb.connect(f"http://127.0.0.1:{free_port()}", KEY, agent="x"),
        lambda: letta_nb.connect(server.base_url, KEY + "-wrong", agent="x"),
    ):
        with pytest.raises(errors.LettaNbError) as info:
            fn()
        seen += [str(info.value), repr(info.value), str(info.value.args)]
    letta_nb.connect(server.base_url)
    for i, text in enumerate(seen):
        _clean(text, f"output #{i}")
    assert "connected to" in "".join(seen)  # the magics did run
    for rec in caplog.records:  # client and in-process server logs (uvicorn, httpx, letta)
        _clean(rec.getMessage(), f"log record {rec.name}")
        _clean(str(rec.args), f"log record args {rec.name}")
    state = Path(letta_nb.session.default_state_dir())
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files, "the cursor store was written"
    for path in files:  # cursor DB (+ WAL), discovery files
        assert KEY.encode() not in path.read_bytes(), path


@pytest.mark.skipif(not NOTEBOOKS, reason="no tutorials in notebooks/")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorials_never_show_the_key(server: Any, path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    saved = tmp_path / path.name
    nbformat.write(nb, saved)
    text = saved.read_text()
    _clean(text, f"executed {path.name}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, f"{path.name} produced no output"
