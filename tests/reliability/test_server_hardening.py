"""Server hardening: loopback by default, no token no remote bind, 401 without the token,
and schemathesis over the embedded server's own OpenAPI schema (no 5xx, no schema violations).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from rel_helpers import free_port, wait_for
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from letta_nb.server import start_in_process
from letta_nb.server.main import add_arguments

TOKEN = "sk-letta-nb-FAKE-0123456789abcdef"
pytestmark = pytest.mark.timeout(180)


def test_cli_defaults_to_loopback() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).host == "127.0.0.1"


def test_default_server_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "letta_nb.cli",
            "server",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "s.sqlite3"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> list[Any]:
            return [
                c
                for c in psutil.Process(proc.pid).net_connections("inet")
                if c.status == psutil.CONN_LISTEN
            ]

        assert wait_for(lambda: bool(listening()) or proc.poll() is not None, 60, 0.1)
        addrs = {c.laddr.ip for c in listening()}
        assert addrs == {"127.0.0.1"}, addrs
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_non_loopback_without_token_refuses_in_one_line(
    tmp_path: Path, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LETTA_NB_SERVER_TOKEN", raising=False)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "letta_nb.cli",
            "server",
            "--host",
            host,
            "--port",
            "0",
            "--db",
            str(tmp_path / "s.sqlite3"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "refusing" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = start_in_process(tmp_path_factory.mktemp("guarded") / "s.sqlite3", token=TOKEN)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/agents/", "GET"),
        ("/v1/runs/", "GET"),
        ("/v1/models/", "GET"),
        ("/openapi.json", "GET"),
        ("/v1/agents/", "POST"),
    ],
)
def test_token_guard(guarded: Any, path: str, method: str) -> None:
    url = guarded.base_url + path
    body = {"name": "g", "model": "letta_nb/demo"} if method == "POST" else None
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        r = httpx.request(method, url, headers=headers, json=body, timeout=30)
        assert r.status_code == 401, (headers, r.status_code)
        assert TOKEN not in r.text
    r = httpx.request(
        method, url, headers={"Authorization": f"Bearer {TOKEN}"}, json=body, timeout=30
    )
    assert r.status_code == 200, r.text
    assert httpx.get(guarded.base_url + "/v1/health/", timeout=30).status_code == 200


# ---- schemathesis over /openapi.json -------------------------------------------------------
MAX_EXAMPLES = 8  # per operation: the whole sweep stays well under 60 s on a loaded machine


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = start_in_process(tmp_path_factory.mktemp("fuzz") / "s.sqlite3")
    try:
        httpx.post(
            srv.base_url + "/v1/agents/",
            json={"name": "fuzz", "model": "letta_nb/demo"},
            timeout=30,
        ).raise_for_status()
        yield srv
    finally:
        srv.stop()


def test_openapi_no_5xx_no_schema_violation(fuzz_server: Any) -> None:
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json")
    failures: list[str] = []
    calls = 0

    def check(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(timeout=20)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:200]}")
            return
        try:
            case.validate_response(
                response, checks=[response_schema_conformance, content_type_conformance]
            )
        except Exception as exc:  # a schema violation: collect them all, report at the end
            failures.append(f"{where}: {str(exc).splitlines()[0][:200]}")

    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        test = settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(op.as_strategy())(check))
        test()
    assert operations >= 20 and calls >= operations
    assert not failures, "\n".join(sorted(set(failures))[:30])
    print(f"\n[schemathesis] {operations} operations, {calls} calls, no 5xx, no violation")
