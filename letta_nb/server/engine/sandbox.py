"""Runs one custom tool in a child process (``python -P sandbox.py REQUEST RESULT``).

Standard library only, and never imported by the server: the parent writes the request
(source, function name, arguments, workdir) to a private JSON file, this child defines the
function in a fresh namespace, calls it with its working directory set to the agent's folder,
and writes ``{"ok": true, "value": ...}`` or ``{"ok": false, "error": ...}`` to the result
file. What the tool prints goes to this process's stdout/stderr, which the parent captures.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Any

WORKDIR_PARAM = "workdir"  # same convention as letta_nb.server.brains.base.WORKDIR_PARAM


def _call(request: dict[str, Any]) -> dict[str, Any]:
    name = request["name"]
    namespace: dict[str, Any] = {"__name__": "__letta_nb_tool__"}
    exec(compile(request["source"], f"<tool {name}>", "exec"), namespace)
    func = namespace.get(name)
    if not callable(func):
        return {"ok": False, "error": f"tool source does not define a function {name!r}"}
    kwargs = dict(request["arguments"])
    try:
        if WORKDIR_PARAM in inspect.signature(func).parameters:
            kwargs[WORKDIR_PARAM] = request["workdir"]
    except (TypeError, ValueError):
        pass
    value = func(**kwargs)
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            value = str(value)
    return {"ok": True, "value": value}


def main(argv: list[str]) -> int:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, encoding="utf-8") as fh:
        request = json.load(fh)
    os.chdir(request["workdir"])
    try:
        result = _call(request)
    except BaseException as exc:  # the tool's failure is its call's result
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
