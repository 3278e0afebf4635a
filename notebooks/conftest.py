"""nbval for the tutorials: only `NN-*.ipynb`, a fresh letta_nb state dir, no LETTA_* env.

Only the numbered tutorials are collected: a notebook a user saves next to them (an
`Untitled.ipynb`, a scratch copy) or a checkpoint is never run by `scripts/test`.

Each pytest session gets its own `LETTA_NB_STATE_DIR` (cursors, the embedded server's database
and discovery file), so re-running the suite never resumes a previous session's cursors, and
the tutorials always talk to a fresh embedded server, never to Letta Cloud even when
LETTA_API_KEY / LETTA_BASE_URL are set in the shell. The environment is changed only while the
notebooks run (nbval starts each kernel from it) and restored afterwards; the embedded server
the notebooks started is stopped at the end of the session.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SANITIZE = HERE / "nbval-sanitize.cfg"
_saved: dict[str, str] | None = None
_state: Path | None = None


TUTORIAL = re.compile(r"\d\d-[\w-]+\.ipynb")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect the tutorials (`01-quickstart.ipynb` ...) and nothing else from notebooks/."""
    if collection_path.is_dir():
        return collection_path.name == ".ipynb_checkpoints" or None
    if collection_path.suffix == ".ipynb":
        return not (collection_path.parent == HERE and TUTORIAL.fullmatch(collection_path.name))
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Make the sanitize file work from any working directory (addopts give a relative path)."""
    option = config.option
    current = getattr(option, "nbval_sanitize_with", None)
    if current is not None and not Path(current).is_file() and SANITIZE.is_file():
        option.nbval_sanitize_with = str(SANITIZE)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first notebook's kernel starts: a fresh state dir, no LETTA_* settings."""
    global _saved, _state
    if _saved is not None or not str(item.path).endswith(".ipynb"):
        return
    _saved = {k: v for k, v in os.environ.items() if k.startswith("LETTA")}
    for key in _saved:
        del os.environ[key]
    _state = Path(tempfile.mkdtemp(prefix="letta-nb-nbval-"))
    os.environ["LETTA_NB_STATE_DIR"] = str(_state)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _saved, _state
    if _saved is None:
        return
    if _state is not None:
        try:
            from letta_nb.server.launcher import stop_server

            stop_server(_state / "server")
        except Exception as exc:  # never hide the test result behind a cleanup error
            print(f"\nletta_nb nbval: could not stop the embedded server: {exc}")
        shutil.rmtree(_state, ignore_errors=True)
    os.environ.pop("LETTA_NB_STATE_DIR", None)
    os.environ.update(_saved)
    _saved = _state = None
