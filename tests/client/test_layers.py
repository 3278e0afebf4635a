"""The layers, checked in fresh interpreters: what importing each part loads.

The run chain loads no SDK (it talks to `_protocols.LettaBackend`); `frames` builds tables and
imports neither the session nor a backend (the import cycle session → handle → frames →
session is gone); the handle loads no front end until it is displayed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded_by(module: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('letta', 'pandas')))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("letta_nb.run", {"letta_client", "letta_nb.backend", "letta_nb.session", "pandas"}),
        ("letta_nb.frames", {"letta_nb.session", "letta_nb.handle", "letta_nb.backend"}),
        ("letta_nb.handle", {"letta_nb.frames", "letta_nb.widgets", "letta_client", "pandas"}),
        (
            "letta_nb.session",
            {"letta_nb.frames", "letta_nb.widgets", "letta_nb.connection", "pandas"},
        ),
        ("letta_nb.connection", {"letta_nb.frames", "letta_nb.widgets", "pandas"}),
        ("letta_nb", {"letta_nb.session", "letta_nb.connection", "letta_client", "pandas"}),
    ],
)
def test_importing_a_layer_loads_nothing_above_it(module: str, never: set[str]) -> None:
    loaded = _loaded_by(module)
    assert module in loaded
    assert not loaded & never, sorted(loaded & never)
