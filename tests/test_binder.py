"""Binder (repo2docker) installs binder/requirements.txt: every runtime dependency must be pinned
there, at a version inside pyproject's range (else Binder silently runs something else)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name.lower().replace("_", "-")] = pinned
    return pins


def test_every_runtime_dependency_is_pinned_for_binder() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _pins()
    for dep in map(Requirement, deps):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in binder/requirements.txt"
        assert dep.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {dep}"
