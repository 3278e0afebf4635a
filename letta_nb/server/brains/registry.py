"""Which brain plays which model handle. The demo brain is the default when it is installed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from letta_nb.server.brains.base import Brain

DEMO_HANDLE = "letta_nb/demo"


def default_brains() -> dict[str, Brain]:
    """The brains a server offers when the caller names none: the demo brain if importable."""
    try:
        module = importlib.import_module("letta_nb.server.brains.demo")
    except ImportError:
        return {}
    brain_cls = getattr(module, "DemoBrain", None)
    if brain_cls is None:
        return {}
    brain = brain_cls()
    return {brain.handle: brain}


def resolve(brains: Mapping[str, Brain], handle: str | None) -> str | None:
    """The handle an agent gets: the requested one if offered, else the default (demo first)."""
    if handle and handle in brains:
        return handle
    if handle:
        return None
    if DEMO_HANDLE in brains:
        return DEMO_HANDLE
    return next(iter(brains), None)
