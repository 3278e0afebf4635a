"""A real web page cannot drive the embedded server (Debian chromium through Playwright).

The server here has no token on purpose: the request guard alone must stop the browser. Three
attacks from pages the user might have open:

* a page on another origin (another local port) POSTs ``text/plain`` JSON with
  ``mode: "no-cors"`` (no preflight: the request is sent, only its answer is hidden) to create
  an agent, and reads ``/v1/agents/``;
* the same with ``Content-Type: application/json`` (a CORS preflight first);
* DNS rebinding: a page served as ``http://rebind.test:PORT`` whose name then resolves to
  127.0.0.1 reads ``/v1/agents/`` and creates an agent as a *same-origin* request.

Each is refused by the server (403 for the foreign Origin or Host; logged as one line), and
nothing is created or read.
"""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from letta_nb.server import EmbeddedServer, start_in_process

pytestmark = pytest.mark.timeout(180)
CHROMIUM = "/usr/bin/chromium"
ARGS = (
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--host-resolver-rules=MAP rebind.test 127.0.0.1",  # the attacker's DNS, after rebinding
    # Chrome's own (recent, Chrome-only) Private Network Access checks would block the rebound
    # requests before the server sees them; other browsers have none: test the server's guard.
    "--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,"
    "PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks",
)
AGENT = '{"name": "pwned", "model": "letta_nb/demo"}'

ATTACK = """
async (server) => {
  const out = {};
  const body = BODY;
  try {
    await fetch(server + "/v1/agents/", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)});
    out.no_cors_post = "sent";
  } catch (e) { out.no_cors_post = "error: " + e; }
  try {
    const r = await fetch(server + "/v1/agents/", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    out.cors_post = r.status;
  } catch (e) { out.cors_post = "blocked: " + e; }
  try {
    const r = await fetch(server + "/v1/agents/");
    out.read = r.status + " " + (await r.text());
  } catch (e) { out.read = "blocked: " + e; }
  return out;
}
""".replace("BODY", AGENT)


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("CI is set and chromium is missing (scripts/install-browser.sh)")
        pytest.skip("chromium not found: the browser attack test did NOT run")
    return path


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>an unrelated page</title><p>hello"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def srv() -> Iterator[EmbeddedServer]:
    with start_in_process() as s:  # no token: the guard alone stands between page and server
        yield s


def _in_browser(job: Callable[[Any], Any]) -> Any:
    """Run ``job(browser)`` with a fresh chromium, on a thread of its own: Playwright's sync API
    refuses a thread with an event loop (another suite's Playwright may hold this one's)."""
    path = _chromium()
    result: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as pw:
                instance = pw.chromium.launch(executable_path=path, args=list(ARGS), timeout=60_000)
                try:
                    result.append(job(instance))
                finally:
                    instance.close()
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="browser-attack")
    worker.start()
    worker.join(150)
    if worker.is_alive():
        raise AssertionError("the browser did not finish within 150 s")
    if failure:
        raise failure[0]
    return result[0]


def _agents(srv: EmbeddedServer) -> list[str]:
    return [a["name"] for a in httpx.get(srv.base_url + "/v1/agents/", timeout=30).json()]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "letta_nb.server.requests" and " -> 403 " in r.getMessage()
    ]


def test_a_page_on_another_origin_cannot_create_or_read(
    srv: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="letta_nb.server.requests")
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    before = _agents(srv)

    def attack(browser: Any) -> Any:
        page = browser.new_context().new_page()
        page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
        return page.evaluate(ATTACK, srv.base_url)

    try:
        out = _in_browser(attack)
    finally:
        site.shutdown()
        site.server_close()
    assert out["no_cors_post"] == "sent"  # the browser did send it: only the server can refuse
    assert str(out["cors_post"]).startswith("blocked")  # no CORS headers: the page learns nothing
    assert str(out["read"]).startswith("blocked")
    assert _agents(srv) == before and "pwned" not in _agents(srv)
    refused = _refusals(caplog)
    assert any("POST /v1/agents/ -> 403" in line and "Origin" in line for line in refused)
    assert any("GET /v1/agents/ -> 403" in line and "Origin" in line for line in refused)


def test_a_rebound_dns_name_cannot_create_or_read(
    srv: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="letta_nb.server.requests")
    port = srv.base_url.rsplit(":", 1)[1]
    origin = f"http://rebind.test:{port}"
    before = _agents(srv)

    def attack(browser: Any) -> Any:
        page = browser.new_context().new_page()
        # the attacker's page, as first served by the attacker's DNS answer ...
        page.route(
            f"{origin}/",
            lambda route: route.fulfill(status=200, content_type="text/html", body="<p>hi"),
        )
        page.goto(f"{origin}/")
        # ... then the name resolves to 127.0.0.1: the page's own-origin requests hit the server
        return page.evaluate(ATTACK, origin)

    out = _in_browser(attack)
    assert out["cors_post"] == 403 and out["read"].startswith("403 ")  # same-origin: it reads
    assert "Host" in out["read"] and "pwned" not in out["read"]
    assert _agents(srv) == before
    refused = _refusals(caplog)
    assert any("GET /v1/agents/ -> 403" in line and "Host" in line for line in refused)
