"""Issue 12 in a real browser: what a person sees of a run, in JupyterLab 4 and Notebook 7, in the
light and the dark theme. Screenshots go to test-artifacts/browser/view-*.png.

One notebook per test; the JupyterLab server (which also serves Notebook 7) is shared by the
session. Every check reads the rendered DOM of the cell's own output area.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from lab import (
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
    set_theme,
    wait_kernel_idle,
)
from playwright.sync_api import Locator, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CONNECT = "%load_ext letta_nb\n%letta connect"
QUESTION = "%%letta\nWhich region sells the most, and is the trend going up?"


def view(page: Page, index: int) -> Locator:
    return cell_output(page, index).locator(".lnb-run")


def wait_status(page: Page, index: int, status: str, timeout: float = 60) -> Locator:
    v = view(page, index)
    expect(v.locator(f".lnb-status[data-status={status}]")).to_have_count(1, timeout=timeout * 1000)
    return v


def shot(page: Page, index: int, name: str) -> None:
    cell(page, index).scroll_into_view_if_needed()
    screenshot(page, f"view-{name}", locator=cell(page, index))


def both_themes(page: Page, name: str, *cells: int) -> None:
    for theme in ("light", "dark"):
        set_theme(page, theme)
        for i in cells:
            shot(page, i, f"{name}-cell{i}-{theme}")
    set_theme(page, "light")


def dom_order(page: Page, first: Locator, second: Locator) -> bool:
    """True when `first` comes before `second` in the document."""
    a, b = first.element_handle(), second.element_handle()
    assert a is not None and b is not None
    return bool(page.evaluate("([a, b]) => !!(a.compareDocumentPosition(b) & 4)", [a, b]))


# ---------------------------------------------------------------- readable content, header


def test_a_finished_run_reads_well(page: Page, lab: Lab, make_notebook: Callable[..., str]) -> None:
    path = make_notebook([CONNECT, QUESTION, "%%letta\n/long 700 1", "%%letta\n/fail"])
    open_notebook(page, lab, path)
    run_all(page)
    v = wait_status(page, 1, "completed")
    # header: agent · status · tokens; seq and rate only in the details tooltip
    head = v.locator(".lnb-title")
    text = head.inner_text()
    assert re.fullmatch(r"demo-analyst · completed( · [\d.]+ s)? · [\d,]+ tokens", text), text
    assert "seq" not in text and "frames/s" not in text
    assert re.search(r"run run-[0-9a-f-]+ · seq \d+", head.get_attribute("title") or "")
    assert v.locator(".lnb-ctl button").count() == 0, "no controls on a finished run"
    # both parts of the question answered, tools as readable one-liners, returns folded
    answer = v.locator(".lnb-as").inner_text()
    assert "sells the most" in answer and "it is going up" in answer, answer
    calls = v.locator(".lnb-tc")
    expect(calls).to_have_count(2)
    assert calls.nth(0).inner_text().startswith("→ top_n column: region · n: 5")
    assert v.locator(".lnb-tr details[open]").count() == 0
    assert v.locator(".lnb-re details[open]").count() == 0, "reasoning collapses once settled"
    # a long message is capped in height with a "show all" toggle
    long = wait_status(page, 2, "completed")
    box = long.locator(".lnb-cap")
    capped = box.bounding_box()
    assert capped is not None and capped["height"] < 420, capped
    long.get_by_role("button", name="show all").click()
    page.wait_for_function(  # the toggle re-lays out the block: wait for it, bounded
        "([el, h]) => el.getBoundingClientRect().height > 2 * h",
        arg=[box.element_handle(), capped["height"]],
        timeout=10_000,
    )
    long.get_by_role("button", name="show less").click()
    # /fail: the error appears once
    failed = wait_status(page, 3, "failed")
    assert output_text(cell_output(page, 3)).count("Simulated upstream LLM failure") == 1
    assert failed.locator(".lnb-err").count() == 0
    both_themes(page, "finished", 1, 2, 3)


# ---------------------------------------------------------------- approvals


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_an_approval_card_is_readable_and_shrinks_where_it_was(
    page: Page, lab: Lab, make_notebook: Callable[..., str], app: str
) -> None:
    path = make_notebook([CONNECT, "%%letta --new\n/gated"], name=f"approval-{app}")
    open_notebook(page, lab, path, app=app)
    run_all(page)
    v = wait_status(page, 1, "requires_approval")
    card = v.locator(".lnb-card")
    expect(card).to_have_count(1)
    expect(v.locator(".lnb-ap")).to_have_count(1)  # once: not inline and in a card
    text = card.inner_text()
    assert "Approval needed: write_report" in text and "Coffee sales summary" in text
    assert "\\n" not in text and "|---|" not in text, "arguments are readable, not raw JSON"
    expect(card.locator("table th").first).to_have_text("region")
    expect(card.locator("td").filter(has_text=re.compile(r"^\$[\d,.]+$")).first).to_be_visible()
    both_themes(page, f"approval-{app}", 1)
    v.get_by_role("button", name="Approve").click()
    v = wait_status(page, 1, "completed")
    expect(v.locator(".lnb-card")).to_have_count(0)
    done = v.locator(".lnb-ap-done")
    expect(done).to_have_count(1)
    assert done.inner_text().startswith("✓ approved · write_report")
    ret, final = v.locator(".lnb-tr"), v.locator(".lnb-as").last
    assert dom_order(page, done, ret) and dom_order(page, ret, final), "in transcript order"
    assert "Done: the report" in final.inner_text()
    assert v.locator(".lnb-ctl button").count() == 0
    expect(v.locator(".lnb-re details[open]")).to_have_count(0)  # folded once it settled
    both_themes(page, f"approved-{app}", 1)


def test_deny_with_a_reason(page: Page, lab: Lab, make_notebook: Callable[..., str]) -> None:
    open_notebook(page, lab, make_notebook([CONNECT, "%%letta --new\n/gated"]))
    run_all(page)
    v = wait_status(page, 1, "requires_approval")
    v.locator(".lnb-reason").fill("the numbers are not reviewed yet")
    v.get_by_role("button", name="Deny").click()
    v = wait_status(page, 1, "completed")
    line = v.locator(".lnb-ap-done").inner_text()
    assert line.startswith("✗ denied · write_report — the numbers are not reviewed yet"), line
    shot(page, 1, "denied-light")


# ---------------------------------------------------------------- model HTML stays text

PAYLOADS = (
    "<script>window.__lnbXss = 1</script>",
    '<img src=x onerror="window.__lnbXss = 2">',
    "[click me](javascript:window.__lnbXss=3)",
    "<a href='javascript:window.__lnbXss=4'>x</a>",
    "**<iframe src=javascript:window.__lnbXss=5>**",
)
XSS_CELLS = [
    "import sys, json\n"
    f"sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'frontend')!r})\n"
    "from frontend_fakes import FakeChain\n"
    "from letta_nb.widgets import RunView\n"
    f"PAYLOADS = {list(PAYLOADS)!r}\n"
    "chain = FakeChain()\n"
    "RunView(chain, agent='<img src=x onerror=\"window.__lnbXss=6\">')",
    "text = ' and '.join(PAYLOADS)\n"
    "chain.think(text)\n"
    "table = '\\n\\n| a | b |\\n|---|---|\\n| ' + PAYLOADS[1] + ' | x |'\n"
    "chain.say('# Report\\n\\n' + text + table)\n"
    "chain.feed('tool_return_message', id='t1', name='probe', status='success',\n"
    "           tool_return=json.dumps({'html': PAYLOADS[0]}), tool_call_id='c0')\n"
    "chain.request_approval(json.dumps({'title': PAYLOADS[1], 'body': '# T\\n\\n' + text}))",
]


def test_model_html_never_runs(page: Page, lab: Lab, make_notebook: Callable[..., str]) -> None:
    open_notebook(page, lab, make_notebook(XSS_CELLS))
    run_cell(page, 0)
    run_cell(page, 1)
    v = view(page, 0)
    expect(v.locator(".lnb-card")).to_have_count(1, timeout=30_000)
    expect(v.locator(".lnb-md h4").first).to_have_text("Report")
    found = page.evaluate(
        """(root) => ({
          xss: window.__lnbXss === undefined ? null : window.__lnbXss,
          bad: [...root.querySelectorAll('script, img, iframe, object, embed, style')].length,
          handlers: [...root.querySelectorAll('*')].filter(
            (e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
          hrefs: [...root.querySelectorAll('a[href]')].map((a) => a.getAttribute('href')),
        })""",
        v.element_handle(),
    )
    assert found == {"xss": None, "bad": 0, "handlers": 0, "hrefs": []}, found
    assert "<script>window.__lnbXss = 1</script>" in v.inner_text()  # shown as text
    shot(page, 0, "payloads-as-text-light")


# ---------------------------------------------------------------- kernel restart


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_after_a_kernel_restart_views_stay_static(
    page: Page, lab: Lab, make_notebook: Callable[..., str], app: str
) -> None:
    path = make_notebook(
        [CONNECT, "%%letta --new\n/long 30 5", "%%letta --new\n/long 3000 20"],
        name=f"restart-{app}",
    )
    open_notebook(page, lab, path, app=app)
    run_all(page)
    wait_status(page, 1, "completed")
    running = wait_status(page, 2, "running")
    record_texts(cell_output(page, 2), timeout=30, until=lambda t: "token20" in t)
    before = output_text(cell_output(page, 1))
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    wait_kernel_idle(page, timeout=60)
    page.wait_for_timeout(1500)  # let the front end mark every model as disconnected
    icons = page.evaluate(
        """() => [...document.querySelectorAll('.jp-OutputArea-output .jupyter-widgets')]
            .map((e) => getComputedStyle(e, '::before'))
            .filter((s) => s.display !== 'none' && s.content !== 'none' && s.content !== 'normal')
            .length"""
    )
    assert icons == 0, f"{icons} broken-link icons over the old views"
    assert output_text(cell_output(page, 1)) == before, "the old view keeps its last state"
    expect(running.locator(".lnb-ctl button").first).to_be_hidden()
    expect(running.locator(".lnb-offline-note")).to_contain_text("The kernel restarted")
    clock = running.locator(".lnb-time").inner_text()
    page.wait_for_timeout(1200)
    assert running.locator(".lnb-time").inner_text() == clock, "the clock stopped"
    both_themes(page, f"restarted-{app}", 1, 2)
    # re-running the running cell after the restart resumes the same run
    run_cell(page, 0)
    run_cell(page, 2, wait=False)
    states = record_texts(cell_output(page, 2), timeout=60, until=lambda t: "token120" in t)
    assert any("token120" in s for s in states), states[-1][-300:]
    execute_command(page, "kernel:interrupt", wait=False)


# ---------------------------------------------------------------- tutorial 01 in JupyterLab


def test_tutorial_01_resumes_in_jupyterlab(page: Page, lab: Lab) -> None:
    """In JupyterLab a copied cell has a new cell id; the tutorial's resume demonstration uses an
    explicit --key, so "same run as before" holds here as it does under nbval."""
    open_notebook(page, lab, "notebooks/01-quickstart.ipynb")
    execute_command(page, "notebook:clear-all-cell-outputs")
    run_all(page, timeout=180)
    wait_kernel_idle(page, timeout=120)
    texts = "\n".join(output_text(cell_output(page, i)) for i in range(18))
    assert "same run as before: True" in texts, texts[-2000:]
    assert "status: completed" in texts  # (the run count is nbval's: it needs a fresh server)
    shot(page, 4, "tutorial01-question-light")


# ---------------------------------------------------------------- a saved notebook


def test_a_saved_tutorial_shows_each_runs_final_transcript(page: Page, lab: Lab) -> None:
    """The shipped tutorial was saved by nbclient; opened without running it (untrusted, so
    JupyterLab shows the outputs' text/html), each live cell shows its run's final transcript."""
    import shutil

    shutil.copy(REPO_ROOT / "notebooks" / "03-approvals.ipynb", lab.root_dir / "saved-03.ipynb")
    open_notebook(page, lab, "saved-03.ipynb")
    out = cell_output(page, 5)  # `%%letta --out card` + `/gated`, approved by the next cell
    expect(out).to_contain_text("✓ approved · write_report")
    expect(out).to_contain_text("Done: the report")
    expect(out).to_contain_text("demo-analyst · completed")
    first = output_text(cell_output(page, 3))
    assert "completed" in first and "token60" in first, first[-300:]
    shot(page, 5, "saved-tutorial-light")


# ---------------------------------------------------------------- run tables


def test_the_runs_table_fits_the_page(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    open_notebook(
        page, lab, make_notebook([CONNECT, "%%letta --wait --new\n/long 3", "%letta runs"])
    )
    run_all(page)
    out = cell_output(page, 2)
    table = out.locator(".lnb-runs table")
    expect(table).to_have_count(1)
    heads = table.locator("th").all_inner_texts()
    assert heads == ["run", "agent", "status", "stop reason", "started (UTC)", "duration",
                     "first token"], heads  # fmt: skip
    rows = table.locator("tbody tr")
    assert 1 <= rows.count() <= 10, "10 rows by default"
    first = rows.first.locator("td").all_inner_texts()
    assert re.fullmatch(r"run-[0-9a-f]{8}", first[0]) and first[1] == "demo-analyst"
    assert re.fullmatch(r"\d+\.\d\d s", first[5]) and "days" not in out.inner_text()
    box, area = table.bounding_box(), out.bounding_box()
    assert box is not None and area is not None and box["width"] <= area["width"], (box, area)
    both_themes(page, "runs-table", 2)


# ---------------------------------------------------------------- conversations


def test_a_conversation_is_named_in_the_header(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    name = "browser notes"
    path = make_notebook(
        [
            CONNECT,
            f'%%letta --new --conversation "{name}"\n/long 3',
            f'%%letta --new --conversation "{name}"\n/recall',
            "%%letta --new\n/recall",
        ]
    )
    open_notebook(page, lab, path)
    run_all(page)
    first = wait_status(page, 1, "completed")
    title = first.locator(".lnb-title")
    assert title.inner_text().startswith(f"demo-analyst · {name} · completed"), title.inner_text()
    conv = first.locator(".lnb-conv")
    assert re.fullmatch(r"conversation conv-[0-9a-f-]{36}", conv.get_attribute("title") or "")
    second = wait_status(page, 2, "completed")
    assert "earlier message" in second.locator(".lnb-as").inner_text()  # the same one's history
    own = wait_status(page, 3, "completed")
    assert own.locator(".lnb-conv").count() == 0  # the agent's own history: no label
    both_themes(page, "conversation", 1)
