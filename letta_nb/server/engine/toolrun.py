"""Tool execution: a brain's built-in tools on a worker thread, custom tools in a child process.

Custom tools (source posted to ``/v1/tools/``) never run inside the server: each call is a
fresh ``sandbox.py`` child with the agent's folder as its working directory, a time limit
(the whole process group is killed when it is over) and no server credentials in its
environment, as Letta's local sandbox does. A tool that hangs, crashes or exits fails its call
with a one-line error; the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from letta_nb.server.brains.base import WORKDIR_PARAM, Brain, ToolResult, accepts_workdir
from letta_nb.server.engine.wire import dumps
from letta_nb.server.storage import private_dir

# Environment variables a tool process never inherits (the server's own credentials).
SECRET_ENV = ("LETTA_NB_SERVER_TOKEN", "LETTA_API_KEY")
OUTPUT_HEAD = 2000  # characters of a failed tool's stderr quoted in its error
SANDBOX = Path(__file__).with_name("sandbox.py")  # run as a script, never imported


def workdir_of(root: Path, agent_id: str) -> Path:
    folder = root / agent_id
    private_dir(folder)
    return folder


class ToolRunner:
    def __init__(
        self,
        workdir_root: Path,
        timeout: float,
        custom_source: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self.workdir_root = workdir_root
        self.timeout = timeout
        self._custom_source = custom_source

    async def run(
        self,
        brain: Brain,
        agent_id: str,
        name: str,
        arguments: dict[str, Any],
        call_id: str,
    ) -> ToolResult:
        """Execute one call; any failure becomes an error tool return, never an exception.

        A tool declaring a ``workdir`` parameter gets the agent's folder (overriding any such
        argument), so the brain never has to put a server path into visible arguments.
        """
        args = dict(arguments)

        def result(status: str, text: str) -> ToolResult:
            return ToolResult(call_id, name, status, text, args)

        func = brain.tools.get(name)
        if func is None:
            source = await self._custom_source(name)
            if source is None:
                return result("error", f"Error: tool {name!r} does not exist.")
            ok, text = await self.run_custom(agent_id, name, source, args)
            return result("success" if ok else "error", text)
        kwargs = dict(arguments)
        if accepts_workdir(func):
            kwargs[WORKDIR_PARAM] = str(workdir_of(self.workdir_root, agent_id).resolve())
        try:
            out = await asyncio.to_thread(func, **kwargs)
        except Exception as exc:
            return result("error", f"Error executing function {name}: {type(exc).__name__}: {exc}")
        return result("success", out if isinstance(out, str) else dumps(out))

    async def run_custom(
        self, agent_id: str, name: str, source: str, arguments: dict[str, Any]
    ) -> tuple[bool, str]:
        """(ok, tool return or error text) of one sandboxed call."""
        workdir = workdir_of(self.workdir_root, agent_id).resolve()
        scratch = Path(tempfile.mkdtemp(prefix="letta-nb-tool-"))  # 0700
        try:
            request = scratch / "request.json"
            result = scratch / "result.json"
            request.write_text(
                json.dumps(
                    {
                        "name": name,
                        "source": source,
                        "arguments": arguments,
                        "workdir": str(workdir),
                    }
                )
            )
            env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
            with (scratch / "stdout").open("wb") as out, (scratch / "stderr").open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-P",
                    str(SANDBOX),
                    str(request),
                    str(result),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=str(workdir),
                    env=env,
                    start_new_session=True,
                )
            try:
                code = await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                return False, (
                    f"Error executing function {name}: timed out after {self.timeout:g} s "
                    "(the tool process was killed)"
                )
            finally:
                if proc.returncode is None:  # cancelled while waiting
                    _kill_group(proc.pid)
            _kill_group(proc.pid)  # whatever the tool left running in its group
            try:
                answer = json.loads(result.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stderr = (scratch / "stderr").read_text(errors="replace")[-OUTPUT_HEAD:]
                tail = stderr.strip().splitlines()[-1:] or [""]
                return False, (
                    f"Error executing function {name}: the tool process exited with code "
                    f"{code} {tail[0]}".rstrip()
                )
            if answer.get("ok"):
                return True, str(answer.get("value", ""))
            return False, f"Error executing function {name}: {answer.get('error')}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
