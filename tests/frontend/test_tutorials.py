"""The tutorials are the test folder, not the demo folder (issue 12.7): pytest collects only the
numbered tutorials, and `scripts/demo` opens a working copy outside the repository's files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def test_only_the_tutorials_are_collected(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    shutil.copy(folder / "01-quickstart.ipynb", folder / "Untitled.ipynb")
    (folder / ".ipynb_checkpoints").mkdir()
    shutil.copy(folder / "01-quickstart.ipynb", folder / ".ipynb_checkpoints" / "01-q.ipynb")
    shutil.copy(folder / "01-quickstart.ipynb", folder / "my-analysis.ipynb")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax",
         "-p", "no:cacheprovider", str(folder)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    files = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    names = {Path(f).name for f in files}
    assert names == {p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")}, done.stdout


def test_demo_opens_a_working_copy(tmp_path: Path) -> None:
    work = tmp_path / "tutorials"
    env = {
        **os.environ,
        "LETTA_NB_DEMO_NO_BOOTSTRAP": "1",
        "LETTA_NB_DEMO_DRY_RUN": "1",
        "LETTA_NB_TUTORIALS": str(work),
        "HOME": str(tmp_path),
    }

    def demo() -> str:
        done = subprocess.run(
            [str(REPO / "scripts" / "demo")], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = demo()
    assert f"--ServerApp.root_dir={work}" in out and str(NOTEBOOKS) not in out
    copies = sorted(p.name for p in work.glob("*.ipynb"))
    assert copies == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    (work / "01-quickstart.ipynb").write_text("{} my edits")
    demo()  # a second start keeps the user's copies
    assert (work / "01-quickstart.ipynb").read_text() == "{} my edits"


def test_tutorial_01_resumes_by_key_in_lab_and_under_nbval() -> None:
    """A copied cell has a new cell id in JupyterLab (a new cursor), none under nbval (the cell
    text): the tutorial's two /long cells share an explicit --key, true in both."""
    nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    longs = [c.source for c in nb.cells if c.cell_type == "code" and "/long 40 50" in c.source]
    keys = [re.search(r"--key (\S+)", s) for s in longs]
    assert len(longs) == 2 and all(keys)
    assert {k.group(1) for k in keys if k} == {"quickstart-long"}


def test_tutorial_links_name_existing_tutorials() -> None:
    """Renumbered tutorials (06 batch, 07 conversations) leave no link to a missing notebook."""
    link = re.compile(r"\]\((?:notebooks/)?(\d\d-[\w-]+\.ipynb)\)")
    sources = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")),
    ]
    found = {name for path in sources for name in link.findall(path.read_text(encoding="utf-8"))}
    assert "06-batch.ipynb" in found and "07-conversations.ipynb" in found
    assert {name for name in found if not (NOTEBOOKS / name).is_file()} == set()


def test_tutorial_06_rerun_cell_is_the_same_batch() -> None:
    """The re-attach cell calls `lnb.map` with the very agent, template and rows of the first
    batch (the key is their hash), so it re-attaches in JupyterLab as under nbval."""
    nb = nbformat.read(NOTEBOOKS / "06-batch.ipynb", as_version=4)
    calls = [
        m.group(0)
        for c in nb.cells
        if c.cell_type == "code"
        for m in re.finditer(r"lnb\.map\(stores, [^\n]*\)", c.source)
    ]
    assert len(calls) == 2 and calls[0] == calls[1], calls
    rerun = next(c for c in nb.cells if c.cell_type == "code" and "runs_before" in c.source)
    text = "".join(o.get("text", "") for o in rerun.outputs)
    counts = re.search(r"runs on the server: (\d+) before, (\d+) after", text)
    assert counts is not None and counts.group(1) == counts.group(2), text
    assert "the same batch: True" in text
