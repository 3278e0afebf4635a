"""Kernel tests: the embedded server lives in the test process, so it outlives kernel restarts.

Every kernel test runs on two ipykernel versions (issue 3, point 6):

- `ipykernel-7.4`: the venv's own ipykernel;
- `ipykernel-6.31`: ipykernel 6.31.0 installed once with `pip install --no-deps --target` into
  `<repo>/.venv/kernels/ipykernel-6.31` (git-ignored, reused by later sessions) and put first on
  the kernel's PYTHONPATH, so `import ipykernel` (and `ipykernel_launcher`) resolve to 6.31
  while IPython, jupyter_client, tornado, pyzmq and comm still come from the venv. No extra pins
  are needed: 6.31 runs with IPython 9 / comm 0.2; its only dependency missing from the venv is
  `nest_asyncio`, which 6.31 imports only for the Tk event loop.

Without network the 6.31 variant is skipped loudly; with `CI` set it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.kernel_harness import Kernel, KernelVariant, check_kernel_versions, make_kernel

REPO_ROOT = Path(__file__).resolve().parents[2]
IPYKERNEL_6 = "6.31.0"
IPYKERNEL_6_DIR = REPO_ROOT / ".venv" / "kernels" / "ipykernel-6.31"
PIP_TIMEOUT = 300.0


VARIANTS = [
    KernelVariant("ipykernel-7.4", "7.4."),
    KernelVariant("ipykernel-6.31", IPYKERNEL_6, IPYKERNEL_6_DIR),
]


def _installed(target: Path) -> bool:
    return (target / "ipykernel" / "__init__.py").is_file() and (
        target / f"ipykernel-{IPYKERNEL_6}.dist-info"
    ).is_dir()


def _install_ipykernel_6(target: Path) -> None:
    """pip-install ipykernel 6.31 (no deps) into `target`, atomically; skip/fail if offline."""
    if _installed(target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
        str(tmp),
        f"ipykernel=={IPYKERNEL_6}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        problem = (
            None
            if proc.returncode == 0
            else (f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}")
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = repr(exc)
    if problem is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = (
            f"!!! ipykernel {IPYKERNEL_6} could not be installed, so the "
            f"ipykernel-6.31 kernel tests did NOT run: {' '.join(cmd)} -> {problem}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        tmp.rename(target)
    except OSError:  # another session installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    if not _installed(target):
        pytest.fail(f"pip reported success but {target} holds no ipykernel {IPYKERNEL_6}")


@pytest.fixture(scope="session")
def ipykernel_6_dir() -> Path:
    _install_ipykernel_6(IPYKERNEL_6_DIR)
    return IPYKERNEL_6_DIR


@pytest.fixture(scope="session", params=VARIANTS, ids=[v.id for v in VARIANTS])
def kernel_variant(request: pytest.FixtureRequest) -> KernelVariant:
    variant: KernelVariant = request.param
    if variant.pythonpath is not None:
        request.getfixturevalue("ipykernel_6_dir")
    return variant


@pytest.fixture(scope="session")
def kernel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from letta_nb.server import start_in_process

    srv = start_in_process(tmp_path_factory.mktemp("lnb-kserver") / "server.sqlite3")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def kernel(kernel_server: Any, kernel_variant: KernelVariant, tmp_path: Path) -> Iterator[Kernel]:
    state = tmp_path / "state"
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LETTA_", "JPY_", "PYTEST_"))}
    env.update(
        LETTA_BASE_URL=kernel_server.base_url, LETTA_NB_STATE_DIR=str(state), PYTHONUNBUFFERED="1"
    )
    if kernel_variant.pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(kernel_variant.pythonpath), env.get("PYTHONPATH")) if p
        )
    k = make_kernel(tmp_path, env)
    k.start()
    try:
        check_kernel_versions(k, kernel_variant)
        yield k
    finally:
        k.stop()
