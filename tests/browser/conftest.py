"""Real-browser fixtures: one JupyterLab + one chromium per session, a fresh page per test.

Chromium missing: skip loudly locally, FAIL in CI (a skipped browser suite in CI
would look green while testing nothing). Install it with scripts/install-browser.sh.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.browser.lab import (
    CHROMIUM_ARGS,
    VIEWPORT,
    Lab,
    artifact_path,
    find_chromium,
    in_ci,
    safe_name,
    screenshot,
    start_lab,
    stop_lab,
    write_notebook,
)

MISSING_CHROMIUM = (
    "chromium not found (/usr/bin/chromium or PATH): browser tests NOT RUN. "
    "Install it with `scripts/install-browser.sh` (Debian package, needs root)."
)
CALL_REPORT = pytest.StashKey[pytest.TestReport]()

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/browser is a browser test, so `-m "not browser"` skips it all."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep the call-phase report so the page fixture can screenshot failures."""
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Make a chromium-less local run impossible to mistake for a green browser suite."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(MISSING_CHROMIUM in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_sep("!", MISSING_CHROMIUM, red=True, bold=True)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the system chromium; skips (locally) or fails (CI) when it is missing."""
    path = find_chromium()
    if path is None:
        if in_ci():
            pytest.fail(f"CI is set and {MISSING_CHROMIUM}", pytrace=False)
        pytest.skip(MISSING_CHROMIUM)
    return path


@pytest.fixture(scope="session")
def lab(chromium_path: str) -> Iterator[Lab]:
    """A JupyterLab 4 server in a temp root with LETTA_NB_STATE_DIR set; killed at session end."""
    with tempfile.TemporaryDirectory(prefix="letta-nb-lab-") as tmp:
        server = start_lab(Path(tmp))
        try:
            yield server
        finally:
            stop_lab(server)
            _stop_letta_server(server.state_dir)


def _stop_letta_server(state_dir: Path) -> None:
    """`%letta connect` in a kernel starts a detached server (own session, outlives the lab)."""
    from letta_nb.server.launcher import stop_server

    try:
        stop_server(state_dir / "server")
    except OSError as exc:
        print(f"[browser] could not stop the letta-nb server: {exc}")


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright, chromium_path: str) -> Iterator[Browser]:
    """Debian chromium driven by Playwright (never a downloaded browser)."""
    instance = playwright_instance.chromium.launch(
        executable_path=chromium_path, args=list(CHROMIUM_ARGS), headless=True, timeout=60_000
    )
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def page(browser: Browser, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Page]:
    """Fresh browser context + page; on failure saves a screenshot and the console log."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.set_default_navigation_timeout(60_000)
    console: list[str] = []
    pg.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    pg.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
    try:
        yield pg
    finally:
        report = request.node.stash.get(CALL_REPORT, None)
        if report is not None and report.failed:
            _save_failure_artifacts(pg, request.node.nodeid, console)
        context.close()
        lab.shutdown_kernels()


def _save_failure_artifacts(page: Page, nodeid: str, console: list[str]) -> None:
    """Best effort: a broken page must not mask the original test failure."""
    name = f"FAILED-{nodeid}"
    try:
        print(f"\n[browser] failure screenshot: {screenshot(page, name)}")
    except Exception as exc:
        print(f"\n[browser] could not save failure screenshot: {exc}")
    artifact_path(name, ".console.txt").write_text("\n".join(console))


@pytest.fixture
def make_notebook(lab: Lab, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: make_notebook(sources, name=None) writes a notebook into the lab root.

    Returns the lab-relative path to pass to open_notebook(page, lab, path).
    """

    def _make(sources: Sequence[str], name: str | None = None) -> str:
        filename = safe_name(name or request.node.name) + ".ipynb"
        return write_notebook(lab.root_dir / filename, sources).name

    return _make
