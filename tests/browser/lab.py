"""Helpers to drive a real JupyterLab 4 in Debian's chromium through Playwright.

Kept free of pytest so scenario tests (and ad-hoc debugging scripts) can import
it directly. Every wait here is bounded: a hung browser or kernel must fail the
test with a message, never hang CI. Recipe: tests/browser/README.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import nbformat
from playwright.sync_api import Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium",)
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1400, "height": 1000}

# The "Jupyter news" toast overlaps buttons in the bottom-right corner.
PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
# Render every cell in the DOM so cell locators work for off-screen cells too.
NOTEBOOK_SETTINGS = {"windowingMode": "none"}


# ---------------------------------------------------------------- environment


def find_chromium() -> str | None:
    """Return the system chromium (never a Playwright-downloaded one), or None.

    LETTA_NB_CHROMIUM overrides the lookup (an unusable value means "missing").
    """
    override = os.environ.get("LETTA_NB_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def in_ci() -> bool:
    """True when running under CI, where missing browsers must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def free_port() -> int:
    """Ask the OS for a free loopback port (tiny race window is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def safe_name(name: str) -> str:
    """Filesystem-safe version of a test id or free-form name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def artifact_path(name: str, suffix: str = ".png") -> Path:
    """Path under test-artifacts/browser/ (created on demand) with a safe file name."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR / f"{safe_name(name)}{suffix}"


# ---------------------------------------------------------------- lab server


@dataclass
class Lab:
    """A running JupyterLab server owned by the test session."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    root_dir: Path
    state_dir: Path
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL for a lab path with the token attached."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the Jupyter REST API (e.g. to list or shut down kernels)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(f"api/{path.lstrip('/')}"), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel so tests don't pile up CPU-hungry kernels on small runners."""
        try:
            for session in self.api("GET", "sessions"):
                self.api("DELETE", f"sessions/{session['id']}")
            for kernel in self.api("GET", "kernels"):
                self.api("DELETE", f"kernels/{kernel['id']}")
        except (urllib.error.URLError, OSError) as exc:
            print(f"[browser] kernel shutdown failed: {exc}", file=sys.stderr)

    def log_tail(self, chars: int = 4000) -> str:
        """Last part of the server log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no server log>"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _lab_env(base: Path, state_dir: Path) -> dict[str, str]:
    """Isolated Jupyter env: no user config, news toast off, venv first on PATH."""
    config_dir = base / "jupyter-config"
    settings_dir = base / "lab-settings"
    _write_json(config_dir / "labconfig" / "page_config.json", PAGE_CONFIG)
    _write_json(
        settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
        NOTEBOOK_SETTINGS,
    )
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    # Kernels must import the working-tree letta_nb even if it is not installed.
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
        PYTHONPATH=pythonpath,
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(base / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(base / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "lab-workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(base / "ipython"),
        LETTA_NB_STATE_DIR=str(state_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def _lab_command(port: int, token: str, root_dir: Path, workspaces: Path) -> list[str]:
    return [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",  # Notebook 7 on the same server
        f"--LabApp.workspaces_dir={workspaces}",
    ]  # fmt: skip


def start_lab(base: Path, *, timeout: float = 90) -> Lab:
    """Start JupyterLab in its own process group under `base` and wait until it answers."""
    root_dir, state_dir = base / "root", base / "letta-nb-state"
    root_dir.mkdir(parents=True)
    state_dir.mkdir(parents=True)
    env = _lab_env(base, state_dir)
    port, token = free_port(), secrets.token_hex(16)
    log_path = artifact_path("jupyter-server", ".log")
    log = log_path.open("wb")
    proc = subprocess.Popen(
        _lab_command(port, token, root_dir, Path(env["JUPYTERLAB_WORKSPACES_DIR"])),
        cwd=root_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    lab = Lab(proc, port, token, root_dir, state_dir, log_path, log)
    try:
        _wait_for_status(lab, timeout)
    except BaseException:
        stop_lab(lab)
        raise
    return lab


def _wait_for_status(lab: Lab, timeout: float) -> None:
    """Poll /api/status until it answers; fail fast if the server process died."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = lab.proc.poll()
        if code is not None:
            raise RuntimeError(f"jupyter lab exited with {code} during startup:\n{lab.log_tail()}")
        try:
            lab.api("GET", "status", timeout=2)
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = repr(exc)
        time.sleep(0.25)
    raise TimeoutError(
        f"jupyter lab not ready after {timeout:.0f}s ({last_error}):\n{lab.log_tail()}"
    )


def stop_lab(lab: Lab, *, grace: float = 10) -> None:
    """Shut kernels down, then SIGTERM the process group, SIGKILL if it lingers."""
    if lab.proc.poll() is None:
        lab.shutdown_kernels()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        if lab.proc.poll() is not None:
            break
        try:
            os.killpg(lab.proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            lab.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if lab._log is not None:
        lab._log.close()


# ---------------------------------------------------------------- notebooks


def write_notebook(path: Path, sources: Sequence[str], *, kernel: str = "python3") -> Path:
    """Write a notebook of code cells (a source starting with '#md ' becomes markdown)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for src in sources:
        if src.startswith("#md "):
            nb.cells.append(nbformat.v4.new_markdown_cell(src[len("#md ") :]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _lab_relpath(lab: Lab, path: str | Path) -> str:
    """Map `path` into the lab root, copying notebooks that live elsewhere (e.g. the repo)."""
    p = Path(path)
    if p.is_absolute():
        if p.is_relative_to(lab.root_dir):
            return p.relative_to(lab.root_dir).as_posix()
        source = p
    elif (lab.root_dir / p).exists():
        return p.as_posix()
    else:
        source = REPO_ROOT / p
    if not source.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    shutil.copy2(source, lab.root_dir / source.name)
    return source.name


# ---------------------------------------------------------------- page actions

_KERNEL_READY_JS = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path || !w.context.isReady) return false;
  const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content.widgets.length > 0;
}"""

_BUSY_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k) return 'no-kernel';
  if (k.status !== 'idle') return k.status;
  const prompts = [...w.node.querySelectorAll('.jp-InputArea-prompt')];
  return prompts.some((p) => p.textContent.includes('*')) ? 'cells-pending' : 'idle';
}"""

_EXEC_START_JS = """([key, id, args]) => {
  const slot = (window.__lnbCmd = window.__lnbCmd || {});
  slot[key] = {done: false};
  window.jupyterapp.commands.execute(id, args).then(
    (result) => { slot[key] = {done: true, result: result === undefined ? null : result}; },
    (err) => { slot[key] = {done: true, error: String(err && err.stack || err)}; });
}"""

_SELECT_CELL_JS = """(index) => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  if (index < 0 || index >= nb.widgets.length) throw new Error(`no cell ${index}`);
  nb.deselectAll();
  nb.activeCellIndex = index;
}"""


def open_notebook(
    page: Page, lab: Lab, path: str | Path, *, timeout: float = 90, app: str = "lab"
) -> str:
    """Open a notebook in JupyterLab (`app="lab"`) or Notebook 7 (`app="notebook"`) and wait
    until its kernel is idle; returns its path relative to the server root.

    `path` may be relative to the lab root, relative to the repo root, or absolute;
    notebooks outside the lab root are copied in first.
    """
    rel = _lab_relpath(lab, path)
    # ?reset: don't restore tabs from earlier tests (they would start extra kernels).
    url = f"lab/tree/{rel}?reset" if app == "lab" else f"notebooks/{rel}"
    page.goto(lab.url(url), timeout=timeout * 1000)
    page.wait_for_function(_KERNEL_READY_JS, arg=rel, timeout=timeout * 1000, polling=200)
    return rel


def execute_command(
    page: Page, command: str, args: dict[str, Any] | None = None, *, wait: bool = True,
    timeout: float = 120,
) -> Any:  # fmt: skip
    """Run a JupyterLab command; with wait=True await its promise (bounded) and return its result.

    page.evaluate on a promise has no timeout, so the promise is parked on window
    and polled with wait_for_function instead.
    """
    key = secrets.token_hex(6)
    page.evaluate(_EXEC_START_JS, [key, command, args or {}])
    if not wait:
        return None
    page.wait_for_function(
        "(key) => window.__lnbCmd[key].done", arg=key, timeout=timeout * 1000, polling=100
    )
    outcome = page.evaluate("(key) => window.__lnbCmd[key]", key)
    if "error" in outcome:
        raise RuntimeError(f"command {command} failed: {outcome['error']}")
    return outcome.get("result")


def run_all(page: Page, *, wait: bool = True, timeout: float = 120) -> Any:
    """Run all cells. wait=True returns once every cell finished (False if one raised)."""
    return execute_command(page, "notebook:run-all-cells", wait=wait, timeout=timeout)


def run_cell(page: Page, index: int, *, wait: bool = True, timeout: float = 120) -> Any:
    """Select cell `index` (0-based, markdown cells count) and run it without advancing."""
    page.evaluate(_SELECT_CELL_JS, index)
    return execute_command(page, "notebook:run-cell", wait=wait, timeout=timeout)


def kernel_state(page: Page) -> str:
    """'idle', a kernel status ('busy', ...), 'cells-pending' ([*] prompts) or 'no-kernel'."""
    return str(page.evaluate(_BUSY_JS))


def wait_kernel_idle(page: Page, timeout: float = 60, *, settle: float = 0.3) -> None:
    """Wait until the kernel is idle with no pending cells for `settle` seconds in a row.

    The settle window avoids returning in the gap between queued executions.
    """
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    state = "unknown"
    while time.monotonic() < deadline:
        state = kernel_state(page)
        now = time.monotonic()
        if state != "idle":
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= settle:
            return
        time.sleep(0.05)
    raise TimeoutError(f"kernel not idle after {timeout}s (last state: {state})")


def _notebook_selector(page: Page) -> str:
    panel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return f'[id="{panel_id}"] .jp-Notebook'


def cell(page: Page, index: int) -> Locator:
    """Locator for cell `index` (0-based) of the current notebook."""
    return page.locator(f"{_notebook_selector(page)} .jp-Cell").nth(index)


def cell_output(page: Page, index: int) -> Locator:
    """Locator for the output area of cell `index` of the current notebook."""
    return cell(page, index).locator(".jp-Cell-outputArea")


def screenshot(page: Page, name: str, *, locator: Locator | None = None) -> Path:
    """Save a PNG under test-artifacts/browser/ (the viewport, or just `locator`)."""
    path = artifact_path(name)
    if locator is not None:
        locator.screenshot(path=str(path), timeout=15_000)
    else:
        page.screenshot(path=str(path), timeout=15_000)
    return path


THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


def set_theme(page: Page, theme: str) -> None:
    """Switch the JupyterLab / Notebook 7 theme (`light` or `dark`) and wait until it applies."""
    name = THEMES[theme]
    execute_command(page, "apputils:change-theme", {"theme": name}, timeout=30)
    page.wait_for_function(
        "(light) => document.body.dataset.jpThemeLight === String(light)"
        " && !document.querySelector('#jupyterlab-splash')",
        arg=theme == "light",
        timeout=30_000,
    )


_OUTPUT_TEXT_JS = """(els) => els.map((e) => {
  const outs = e.matches('.jp-OutputArea-output') ? [e]
    : [...e.querySelectorAll(':scope > .jp-OutputArea-child > .jp-OutputArea-output')];
  return outs.length ? outs.map((o) => o.innerText).join('\\n') : e.innerText;
}).join('\\n')"""


def output_text(locator: Locator) -> str:
    """Visible text of an output locator without the "[n]:" prompts; '' if absent (no wait)."""
    return str(locator.evaluate_all(_OUTPUT_TEXT_JS)).strip()


def record_texts(
    locator: Locator,
    *,
    timeout: float,
    until: Callable[[str], bool] | None = None,
    on_change: Callable[[int, str], None] | None = None,
    interval: float = 0.05,
) -> list[str]:
    """Poll `locator`'s visible text; return the distinct consecutive states seen, in order.

    Stops when `until(text)` is true or after `timeout` seconds (no exception: the
    caller asserts on the list). Used to prove streaming shows intermediate states.
    `on_change(i, text)` runs on each new state, e.g. to screenshot a mid-stream state.
    """
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output_text(locator)
        if not texts or texts[-1] != text:
            texts.append(text)
            if on_change is not None:
                on_change(len(texts) - 1, text)
        if until is not None and until(text):
            break
        time.sleep(interval)
    return texts
