"""The five product scenarios of issue 5, in a real JupyterLab 4 + Debian chromium.

Each test opens its own notebook (one kernel per scenario), drives it like a user (run cells,
click the run view's buttons), saves screenshots under test-artifacts/browser/ at the key
moments and asserts on what those screenshots show: the cell's output area as rendered in the
DOM, plus the embedded server's REST API for what the server did (runs created, run status).

The server's base URL is read from the `%letta connect` line the notebook prints, so the checks
talk to whichever embedded server the kernel really uses (the shared detached one, or the
in-process fallback).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.lab import (
    REPO_ROOT,
    Lab,
    cell,
    cell_output,
    execute_command,
    open_notebook,
    output_text,
    record_texts,
    run_all,
    run_cell,
    screenshot,
    wait_kernel_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CONNECT = "%load_ext letta_nb\n%letta connect"
TUTORIAL = "notebooks/03-approvals.ipynb"
#: A live cell that streams visibly: 60 tokens, 40 ms apart (~2.4 s of streaming).
VISIBLE_STREAM = "/long 60 40"
TOKEN = re.compile(r"\btoken(\d+)\b")
CONNECTED = re.compile(r"connected to (http://\S+)")


# ---------------------------------------------------------------- helpers


def letta_cell(body: str, flags: str = "") -> str:
    return f"%%letta {flags}".rstrip() + "\n" + body


def server_url(page: Page, index: int = 0) -> str:
    """Base URL of the server the kernel connected to, from the `%letta connect` output."""
    out = cell_output(page, index)
    expect(out).to_contain_text("connected to", timeout=60_000)
    found = CONNECTED.search(output_text(out))
    assert found, f"no 'connected to URL' line in cell {index}: {output_text(out)!r}"
    return found.group(1).rstrip("·").strip()


def server_get(lab: Lab, base_url: str, path: str, timeout: float = 10) -> Any:
    """GET a JSON document from the embedded Letta-compatible server, with the token that
    `connect()` uses (kept in the lab's state dir, never printed)."""
    from letta_nb.server.launcher import server_status

    info = server_status(lab.state_dir / "server")
    assert info is not None and info.base_url == base_url, (info, base_url)
    req = urllib.request.Request(
        f"{base_url}/{path.lstrip('/')}", headers={"Authorization": f"Bearer {info.token}"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def server_run_ids(lab: Lab, base_url: str) -> list[str]:
    return [row["id"] for row in server_get(lab, base_url, "v1/runs/?limit=1000")]


def status_of(out: Locator) -> str:
    """The run view's status (the `data-status` its header sets); '' before it rendered."""
    label = out.locator(".lnb-status")
    return (label.first.get_attribute("data-status") or "") if label.count() else ""


def run_ids_shown(out: Locator) -> list[str]:
    """Run ids in the run views' header details (the title tooltip: `run run-<uuid> ...`)."""
    titles = out.locator(".lnb-title")
    texts = [titles.nth(i).get_attribute("title") or "" for i in range(titles.count())]
    return [m for t in texts for m in re.findall(r"\brun (run-[0-9a-f-]+)", t)]


def wait_status(out: Locator, statuses: tuple[str, ...], timeout: float) -> str:
    """Wait until the view's status label shows one of `statuses`; returns it."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = status_of(out)
        if status in statuses:
            return status
        time.sleep(0.1)
    raise AssertionError(
        f"status never became {statuses} (last {status!r}): {output_text(out)[-800:]!r}"
    )


def tokens(text: str) -> list[int]:
    return [int(n) for n in TOKEN.findall(text)]


def stderr_outputs(page: Page) -> list[str]:
    """Text of every stderr/error output in the current notebook (tracebacks included)."""
    loc = page.locator(
        '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    )
    return [loc.nth(i).inner_text() for i in range(loc.count())]


def progressive_states(states: list[str]) -> list[list[int]]:
    """The distinct partial token sequences seen (each a strict prefix of 1..n)."""
    seqs = [tokens(s) for s in states]
    return [s for s in seqs if s and s == list(range(1, len(s) + 1))]


def record_many(
    locators: dict[int, Locator],
    *,
    timeout: float,
    until: dict[int, Callable[[str], bool]],
    on_change: Callable[[int, str], None] | None = None,
    interval: float = 0.05,
) -> dict[int, list[str]]:
    """`record_texts` for several outputs at once (e.g. cells of one Run All), keyed by cell.

    Stops when every `until[i]` holds for its output, or at `timeout` (no exception).
    """
    states: dict[int, list[str]] = {i: [] for i in locators}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, loc in locators.items():
            text = output_text(loc)
            if not states[i] or states[i][-1] != text:
                states[i].append(text)
                if on_change is not None:
                    on_change(i, text)
        if all(cond(states[i][-1]) for i, cond in until.items()):
            break
        time.sleep(interval)
    return states


def tutorial_gated_cell(path: Path) -> int:
    """Index of the tutorial's first widget (not --wait) `%%letta` cell sending `/gated`."""
    nb = nbformat.read(path, as_version=4)
    for i, c in enumerate(nb.cells):
        first, _, body = c.source.partition("\n")
        if (
            c.cell_type == "code"
            and first.startswith("%%letta")
            and "--wait" not in first
            and body.strip() == "/gated"
        ):
            return i
    raise AssertionError(f"{path.name}: no `%%letta` cell sending /gated")


def tutorial_live_cells(path: Path) -> list[tuple[int, int, int]]:
    """(cell index, N, DELAY_MS) of the tutorial's live (widget, not `--wait`) `%%letta`
    cells sending `/long N D` with D > 0."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, c in enumerate(nb.cells):
        m = re.fullmatch(r"%%letta\b([^\n]*)\n\s*/long\s+(\d+)\s+(\d+)\s*", c.source.strip())
        if c.cell_type == "code" and m and "--wait" not in m.group(1) and int(m.group(3)) > 0:
            found.append((i, int(m.group(2)), int(m.group(3))))
    return found


# ---------------------------------------------------------------- 1. progressive streaming


def test_live_cell_streams_progressively(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    """A `%%letta /long 60 40` cell shows its text growing, with the kernel free meanwhile."""
    open_notebook(page, lab, make_notebook([CONNECT, letta_cell(VISIBLE_STREAM)]))
    assert run_cell(page, 0) is True
    run_cell(page, 1, wait=False)  # watch the stream from the start
    out = cell_output(page, 1)
    mid: list[Path] = []

    def snap(_: int, text: str) -> None:
        seq = tokens(text)
        if not mid and 5 <= len(seq) < 60:
            mid.append(screenshot(page, "s1-generated-midstream"))

    states = record_texts(out, timeout=90, until=lambda t: "completed" in t, on_change=snap)
    screenshot(page, "s1-generated-done")

    partial = [s for s in progressive_states(states) if len(s) < 60]
    assert len({len(s) for s in partial}) >= 2, (
        f"fewer than two distinct partial states of the streamed text: {states[:8]}"
    )
    assert mid, "no mid-stream screenshot: the text never showed a partial state"
    final = output_text(out)
    assert tokens(final) == list(range(1, 61)), final[-400:]
    assert status_of(out) == "completed"
    # One answer, one message: the pauses between tokens must not split it (before e77ee22
    # the runner closed the open message on every Sleep: one widget line per token).
    assert out.locator(".lnb-as").count() == 1
    # Each recorded state only ever extends the previous one (text never goes backwards).
    lengths = [len(tokens(s)) for s in states]
    assert lengths == sorted(lengths), lengths
    assert "token" not in output_text(cell_output(page, 0))
    wait_kernel_idle(page, timeout=30)  # the cell itself returned at once


def test_approvals_tutorial_run_all(page: Page, lab: Lab) -> None:
    """Run All on the approvals tutorial in JupyterLab: every live `%%letta /long N D` cell
    streams visibly, the gated cell's view ends approved in its own cell, nothing hits stderr.

    The tutorial's `/gated` cell settles (and is approved by the next cell) within about a
    second, too fast to watch; the progressive-streaming check needs a `/long N DELAY_MS` cell
    in the tutorial. Until it has one this test xfails with that reason after all its other
    checks passed; test_live_cell_streams_progressively covers the behaviour meanwhile.
    """
    live = tutorial_live_cells(REPO_ROOT / TUTORIAL)
    open_notebook(page, lab, TUTORIAL)
    execute_command(page, "notebook:clear-all-cell-outputs")  # stored outputs must not count
    run_all(page, wait=False)
    # The `%%letta --out card` + `/gated` cell; the cell after it approves from Python.
    gated = tutorial_gated_cell(REPO_ROOT / TUTORIAL)
    watched = {gated: cell_output(page, gated), **{i: cell_output(page, i) for i, _, _ in live}}
    goals: dict[int, Callable[[str], bool]] = {
        gated: lambda t: "Done: the report" in t and "completed" in t,
        **{i: (lambda t, n=n: f"token{n}" in t and "completed" in t) for i, n, _ in live},
    }
    sizes = {i: n for i, n, _ in live}
    snapped: set[int] = set()

    def snap(i: int, text: str) -> None:
        if i in sizes and i not in snapped and 0 < len(tokens(text)) < sizes[i]:
            snapped.add(i)
            cell(page, i).scroll_into_view_if_needed()
            screenshot(page, f"s1-tutorial-cell{i}-midstream")

    states = record_many(watched, timeout=150, until=goals, on_change=snap)
    wait_kernel_idle(page, timeout=150)
    cell(page, gated).scroll_into_view_if_needed()
    screenshot(page, "s1-tutorial-gated-cell-done")

    final = output_text(watched[gated])
    assert "write_report" in final and "Done: the report" in final, final[-600:]
    assert "approved" in final and status_of(watched[gated]) == "completed"
    assert watched[gated].locator(".lnb-run").count() == 1
    assert "Done: the report" not in output_text(cell_output(page, 1))
    assert not stderr_outputs(page), stderr_outputs(page)
    for i, n, _delay in live:
        partial = [q for q in progressive_states(states[i]) if len(q) < n]
        assert len({len(q) for q in partial}) >= 2, f"cell {i} did not stream visibly: {states[i]}"
        assert tokens(output_text(watched[i])) == list(range(1, n + 1))
    if not live:
        pytest.xfail(  # reported, not hidden: every other check of this test passed
            f"{TUTORIAL} has no `%%letta` cell that streams visibly (e.g. `{VISIBLE_STREAM}`); "
            f"its gated cell went through {len([t for t in states[gated] if t])} visible "
            "state(s) only. Covered by test_live_cell_streams_progressively."
        )


# ---------------------------------------------------------------- 2. approve in the browser


def test_approve_gated_tool_in_its_own_cell(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    open_notebook(page, lab, make_notebook([CONNECT, letta_cell("/gated"), 'print("after")']))
    assert run_all(page) is True
    out = cell_output(page, 1)
    approve = out.get_by_role("button", name="Approve")
    deny = out.get_by_role("button", name="Deny")
    expect(approve).to_be_enabled(timeout=60_000)
    expect(deny).to_be_enabled()
    assert status_of(out) == "requires_approval"
    expect(out).to_contain_text("Approval needed: write_report")
    screenshot(page, "s2-approval-requested")

    approve.click()

    wait_status(out, ("completed",), timeout=60)
    expect(approve).to_have_count(0)  # the card shrank to its outcome
    expect(out.locator(".lnb-ap-done")).to_contain_text("approved")
    expect(out.locator(".lnb-tr")).to_contain_text("← write_report success")  # the tool result
    expect(out).to_contain_text("Done: the report")  # the final answer
    title = out.locator(".lnb-title").first.get_attribute("title") or ""
    assert "(2 runs in this chain)" in title, title
    screenshot(page, "s2-approved-completed")
    # Same cell, not elsewhere: the other cells show none of it.
    for other in (0, 2):
        text = output_text(cell_output(page, other))
        assert "write_report" not in text and "Done: the report" not in text, (other, text)
    assert output_text(cell_output(page, 2)) == "after"
    assert out.locator(".lnb-run").count() == 1


# ---------------------------------------------------------------- 3. re-run a finished cell


def test_rerun_finished_cell_resumes_without_new_run(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    open_notebook(page, lab, make_notebook([CONNECT, letta_cell("/long 40 25")]))
    assert run_all(page) is True
    base = server_url(page)
    out = cell_output(page, 1)
    wait_status(out, ("completed",), timeout=90)
    first_text = output_text(out)
    assert tokens(first_text) == list(range(1, 41))
    (run_id,) = run_ids_shown(out)
    screenshot(page, "s3-before-rerun")
    runs_before = server_run_ids(lab, base)
    assert run_id in runs_before

    run_cell(page, 1, wait=False)
    # Every state the output goes through already holds the whole transcript (or nothing,
    # while JupyterLab clears the cell): nothing streams again.
    states = record_texts(out, timeout=60, until=lambda t: "completed" in t)
    wait_kernel_idle(page, timeout=60)
    screenshot(page, "s3-after-rerun")

    final = output_text(out)
    assert status_of(out) == "completed"
    assert tokens(final) == list(range(1, 41)), final[-400:]
    partial = [s for s in states if "token" in s and tokens(s) != list(range(1, 41))]
    assert not partial, f"the re-run streamed again instead of showing the transcript: {partial}"
    assert run_ids_shown(out) == [run_id]
    assert (
        page.locator(".jp-Cell").nth(1).locator(".jp-InputPrompt").inner_text().strip() == "[3]:"
    )  # executed again (Run All gave [1], [2])
    assert server_run_ids(lab, base) == runs_before, "re-running the cell created a server run"


# ---------------------------------------------------------------- 4. cancel


def test_cancel_long_run(page: Page, lab: Lab, make_notebook: Callable[..., str]) -> None:
    open_notebook(page, lab, make_notebook([CONNECT, letta_cell("/long 2000 20")]))
    assert run_all(page) is True
    base = server_url(page)
    out = cell_output(page, 1)
    record_texts(out, timeout=60, until=lambda t: len(tokens(t)) >= 5)
    assert status_of(out) == "running", output_text(out)[-400:]
    screenshot(page, "s4-running")

    cancel = out.get_by_role("button", name="Cancel")
    expect(cancel).to_be_enabled()
    cancel.click()

    wait_status(out, ("cancelled",), timeout=60)
    expect(out).to_contain_text("■ cancelled")  # the run's stop reason, in the transcript
    expect(cancel).to_have_count(0)  # controls go once the run is over
    expect(out.get_by_role("button", name="Detach")).to_have_count(0)
    screenshot(page, "s4-cancelled")
    (run_id,) = run_ids_shown(out)
    run = server_get(lab, base, f"v1/runs/{run_id}")
    assert run["status"] == "cancelled", run
    shown = tokens(output_text(out))
    assert 2000 not in shown, "the run streamed to its end despite Cancel"
    # Nothing more arrives after the cancel settled.
    time.sleep(1.0)
    assert tokens(output_text(out)) == shown


# ---------------------------------------------------------------- 5. outputs stay put


def test_outputs_stay_in_their_own_cells(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    long_n, short_n = 300, 30
    path = make_notebook(
        [
            CONNECT,
            letta_cell(f"/long {long_n} 25"),
            'print("other cell")',
            letta_cell(f"/long {short_n} 10"),
        ]
    )
    open_notebook(page, lab, path)
    assert run_cell(page, 0) is True
    assert run_cell(page, 1) is True
    first = cell_output(page, 1)
    record_texts(first, timeout=60, until=lambda t: len(tokens(t)) >= 3)

    before_other = len(tokens(output_text(first)))
    assert run_cell(page, 2) is True
    assert run_cell(page, 3) is True
    second = cell_output(page, 3)
    wait_status(second, ("completed",), timeout=60)
    # Both runs streamed at the same time: the first is still running, and its cell kept
    # updating while the other cells ran (the view sends about a batch a second).
    assert status_of(first) == "running", output_text(first)[-300:]
    record_texts(first, timeout=10, until=lambda t: len(tokens(t)) > before_other)
    assert len(tokens(output_text(first))) > before_other
    assert status_of(first) == "running"
    screenshot(page, "s5-second-done-first-running")
    wait_status(first, ("completed",), timeout=120)
    wait_kernel_idle(page, timeout=30)
    screenshot(page, "s5-all-done")

    first_text, second_text = output_text(first), output_text(second)
    other_text = output_text(cell_output(page, 2))
    assert tokens(first_text) == list(range(1, long_n + 1)), first_text[-400:]
    assert tokens(second_text) == list(range(1, short_n + 1)), second_text[-400:]
    assert other_text == "other cell"
    assert "other cell" not in first_text and "other cell" not in second_text
    assert first.locator(".lnb-run").count() == 1 and second.locator(".lnb-run").count() == 1
    (run_a,), (run_b,) = run_ids_shown(first), run_ids_shown(second)
    assert run_a != run_b
    assert "token" not in output_text(cell_output(page, 0))
