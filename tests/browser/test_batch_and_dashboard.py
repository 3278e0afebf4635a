"""Issue 15 in a real browser: the batch view (counts, progress, the inbox, an item's run view)
and `%letta dashboard` (this kernel's runs and batches, the server's other runs, the stall
flag, attach and cancel), in JupyterLab, light and dark. Screenshots:
test-artifacts/browser/batch-*.png and dashboard-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.lab import (
    Lab,
    cell,
    cell_output,
    open_notebook,
    output_text,
    run_all,
    screenshot,
    set_theme,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CONNECT = "%load_ext letta_nb\n%letta connect"
ROWS = (
    "import pandas as pd\n"
    "rows = pd.DataFrame({'q': ['/long 40 40', '/long 30 50', '/fail', '/long 50 40',\n"
    "                           '/long 20 30', '/gated']},\n"
    "                    index=['north', 'south', 'east', 'west', 'airport', 'report'])"
)
MAP = "%%letta map rows --concurrency 3 --out batch\n{q}"


def shot(page: Page, index: int, name: str) -> None:
    cell(page, index).scroll_into_view_if_needed()
    screenshot(page, name, locator=cell(page, index))


def both_themes(page: Page, index: int, name: str) -> None:
    for theme in ("light", "dark"):
        set_theme(page, theme)
        shot(page, index, f"{name}-{theme}")
    set_theme(page, "light")


def batch_view(page: Page, index: int) -> Locator:
    return cell_output(page, index).locator(".lnb-batch").first


def batch_status(view: Locator, status: str, timeout: float = 90) -> None:
    expect(view.locator(f".lnb-head .lnb-status[data-status={status}]")).to_have_count(
        1, timeout=timeout * 1000
    )


def test_the_batch_view_shows_progress_the_inbox_and_an_items_run(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    path = make_notebook([CONNECT, ROWS, MAP])
    open_notebook(page, lab, path)
    run_all(page)
    view = batch_view(page, 2)
    expect(view).to_have_attribute("data-ready", "1", timeout=60_000)
    # live: counts by status, a progress bar, rate and the table
    expect(view.locator(".lnb-chip[data-status=running]")).to_have_count(1, timeout=60_000)
    assert view.locator(".lnb-bar .lnb-seg").count() >= 1
    head = view.locator(".lnb-title").inner_text()
    assert re.search(r"demo-analyst · running · \d+ / 6 done", head), head
    expect(view.locator(".lnb-table tbody tr")).to_have_count(6)
    both_themes(page, 2, "batch-running")
    # the gated row waits in the inbox with its readable request
    batch_status(view, "waiting")
    inbox = view.locator(".lnb-inbox")
    expect(inbox).to_be_visible()
    assert "Waiting for approval: 1 item" in inbox.inner_text()
    card = inbox.locator(".lnb-ask")
    expect(card).to_have_count(1)
    text = card.inner_text()
    assert "report" in text and "write_report" in text and "Coffee sales summary" in text
    assert "\\n" not in text, "arguments are readable fields, not raw JSON"
    counts = view.locator(".lnb-chips").inner_text()
    assert "4 completed" in counts and "1 failed" in counts and "1 waiting for approval" in counts
    failed = view.locator(".lnb-table tbody tr").filter(has_text="east")
    expect(failed).to_contain_text("Simulated upstream LLM failure")
    both_themes(page, 2, "batch-inbox")
    card.get_by_role("button", name="Approve").click()
    batch_status(view, "done")
    expect(view.locator(".lnb-inbox")).to_be_hidden()
    assert "5 completed" in view.locator(".lnb-chips").inner_text()
    # a click on a row opens that item's run view inside the batch view
    view.locator(".lnb-table tbody tr").filter(has_text="report").click()
    detail = view.locator(".lnb-detail .lnb-run")
    expect(detail).to_be_visible(timeout=30_000)
    expect(detail.locator(".lnb-status[data-status=completed]")).to_have_count(1, timeout=30_000)
    assert "✓ approved · write_report" in detail.inner_text()
    assert "item report" in view.locator(".lnb-detail-head").inner_text()
    # the status filter
    view.locator(".lnb-chip[data-status=failed]").click()
    expect(view.locator(".lnb-table tbody tr")).to_have_count(1)
    both_themes(page, 2, "batch-done-item")
    view.locator(".lnb-chip[data-status=all]").click()
    expect(view.locator(".lnb-table tbody tr")).to_have_count(6)


DASH_SOURCES = [
    CONNECT,
    "%%letta --new\n/long 3000 30",  # streams for ~90 s (cancelled from its row)
    "%%letta --new\n/silent 40",  # no frames: stalled after --stall seconds
    "import letta_nb as lnb\nb = lnb.map([f'/long {300 + i} 60' for i in range(6)], concurrency=2)",
    "%letta dashboard --stall 3",
]


def dash_row(dash: Locator, kind: str, text: str = "") -> Locator:
    rows = dash.locator(f".lnb-table tbody tr.lnb-k-{kind}")
    return rows.filter(has_text=text) if text else rows


def test_the_dashboard_lists_runs_batches_and_server_runs_with_stalls_attach_and_cancel(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    from letta_nb.backend import Backend
    from letta_nb.core.chunks import new_otid
    from letta_nb.server.launcher import server_status

    path = make_notebook(DASH_SOURCES)
    open_notebook(page, lab, path)
    run_all(page)
    dash = cell_output(page, 4).locator(".lnb-dash")
    expect(dash).to_have_attribute("data-ready", "1", timeout=60_000)
    # a run nobody in this kernel follows (another notebook's, say)
    info = server_status(lab.state_dir / "server")
    assert info is not None
    backend = Backend(info.base_url, info.token)
    agent = backend.resolve_agent("demo-analyst")
    stream = backend.start(
        agent["id"], [{"role": "user", "content": "/long 2000 40"}], otid=new_otid()
    )
    other = next(c.run_id for c in stream if c.run_id)
    stream.close()
    expect(dash_row(dash, "run", "/long 3000 30")).to_have_count(1, timeout=30_000)
    expect(dash_row(dash, "batch")).to_have_count(1)
    expect(dash_row(dash, "item")).to_have_count(2, timeout=30_000)  # concurrency 2
    expect(dash_row(dash, "server")).to_have_count(1, timeout=30_000)
    server_row = dash_row(dash, "server")
    assert "not followed here" in server_row.inner_text()
    stalled = dash_row(dash, "run", "/silent 40")
    expect(stalled.locator(".lnb-stall-flag")).to_have_count(1, timeout=30_000)
    expect(dash.locator(".lnb-title")).to_contain_text("stalled")
    assert "running" in dash_row(dash, "run", "/long 3000 30").inner_text()
    both_themes(page, 4, "dashboard-live")
    # attach the server's run: its live view opens inside the dashboard
    server_row.get_by_role("button", name="attach").click()
    detail = dash.locator(".lnb-detail .lnb-run")
    expect(detail).to_be_visible(timeout=30_000)
    expect(detail.locator(".lnb-status[data-status=running]")).to_have_count(1, timeout=30_000)
    expect(dash_row(dash, "server")).to_have_count(0, timeout=30_000)  # followed here now
    # cancel the long cell run from its row: the server cancels it
    dash_row(dash, "run", "/long 3000 30").get_by_role("button", name="cancel").click()
    row = dash_row(dash, "run", "/long 3000 30")
    expect(row.locator(".lnb-status[data-status=cancelled]")).to_have_count(1, timeout=30_000)
    both_themes(page, 4, "dashboard-attached")
    dash.get_by_role("button", name="close").click()
    expect(dash.locator(".lnb-detail")).to_be_hidden()
    backend.cancel(agent["id"], [other])
    assert "Traceback" not in output_text(cell_output(page, 4))
