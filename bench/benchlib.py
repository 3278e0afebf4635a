"""What every benchmark script shares: the embedded server in a process of its own, process
CPU and RSS from /proc, and the machine notes printed under each table.

The scripts run as `python bench/<name>.py`, so this folder is on their path already.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import httpx

PAGE = os.sysconf("SC_PAGE_SIZE")
START_BOUND = 30.0  # seconds for the server to answer /v1/health/


@contextlib.contextmanager
def server_process(workdir: Path) -> Iterator[tuple[str, int]]:
    """`letta-nb server --port 0` in a child process (log in `workdir/server.log`); yields
    (base_url, pid)."""
    port_file = workdir / "server.port"
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "letta_nb.cli",
            "server",
            "--port",
            "0",
            "--db",
            str(workdir / "server.sqlite3"),
            "--port-file",
            str(port_file),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + START_BOUND
        base_url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode}; see {workdir / 'server.log'}"
                )
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                url = f"http://127.0.0.1:{text}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/v1/health/", timeout=1.0).status_code == 200:
                        base_url = url
                        break
            time.sleep(0.05)  # polling a child's start, bounded by the deadline
        if base_url is None:
            raise TimeoutError(f"server did not become healthy in {START_BOUND:.0f} s")
        yield base_url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def machine_notes(packages: Sequence[str]) -> list[str]:
    """CPUs and load, the Python, and the versions of `packages`: printed under each table."""
    pkgs = []
    for name in packages:
        try:
            pkgs.append(f"{name} {version(name)}")
        except Exception:
            pkgs.append(f"{name} ?")
    load = os.getloadavg()
    return [
        f"cpus: {os.cpu_count()} ({platform.processor() or platform.machine()}), "
        f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"python: {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.platform()}",
        "packages: " + ", ".join(pkgs),
    ]
