"""Smoke tests proving the harness itself: widgets render, clicks reach the kernel,
and updates pushed from a background thread show up progressively in the DOM.

Scenario tests for the product reuse exactly these two patterns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import (
    Lab,
    cell,
    cell_output,
    kernel_state,
    open_notebook,
    record_texts,
    run_all,
    run_cell,
    screenshot,
    wait_kernel_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

BUTTON_CELLS = [
    'print("hello")',
    "import ipywidgets as w\n"
    'result = w.HTML("waiting")\n'
    'button = w.Button(description="Press")\n'
    'button.on_click(lambda _: setattr(result, "value", "pressed"))\n'
    "w.VBox([button, result])",
]

THREAD_CELLS = [
    "import threading, time\n"
    "import ipywidgets as w\n"
    'ticker = w.HTML("tick 0")\n'
    "def tick():\n"
    "    for i in range(1, 6):\n"
    "        time.sleep(0.3)\n"
    '        ticker.value = f"tick {i}"\n'
    "threading.Thread(target=tick, daemon=True).start()\n"
    "ticker",
]


def test_button_click_reaches_kernel(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    open_notebook(page, lab, make_notebook(BUTTON_CELLS))
    assert run_all(page) is True
    expect(cell_output(page, 0)).to_contain_text("hello")
    expect(page.get_by_text("waiting", exact=True)).to_be_visible()
    screenshot(page, "smoke-button-before")

    page.get_by_role("button", name="Press").click()

    expect(page.get_by_text("pressed", exact=True)).to_be_visible()
    screenshot(page, "smoke-button-after")

    # Re-run one cell without waiting, then wait for the kernel: exercises run_cell/cell.
    run_cell(page, 0, wait=False)
    wait_kernel_idle(page, timeout=30)
    expect(cell(page, 0).locator(".jp-InputPrompt")).to_contain_text("[3]")
    expect(cell_output(page, 0)).to_have_text("hello")


def test_background_thread_updates_are_visible_progressively(
    page: Page, lab: Lab, make_notebook: Callable[..., str]
) -> None:
    open_notebook(page, lab, make_notebook(THREAD_CELLS))
    assert run_all(page) is True  # the cell returns at once; the thread keeps going
    output = cell_output(page, 0)

    midstream: list[Path] = []

    def snap_first_intermediate(_: int, text: str) -> None:
        if text not in ("", "tick 0", "tick 5") and not midstream:
            midstream.append(screenshot(page, "smoke-thread-midstream"))

    states = record_texts(
        output, timeout=15, until=lambda text: text == "tick 5", on_change=snap_first_intermediate
    )
    idle_after = kernel_state(page)
    screenshot(page, "smoke-thread-final")

    ticks = [s for s in states if s.startswith("tick ")]
    assert ticks[-1:] == ["tick 5"], f"never reached the final state: {states}"
    assert len(set(ticks)) >= 2, f"no intermediate state was visible: {states}"
    assert ticks == sorted(ticks), f"states went backwards: {states}"
    # The updates arrived while no cell was executing: the kernel was idle throughout.
    assert idle_after == "idle"
    wait_kernel_idle(page, timeout=10)
