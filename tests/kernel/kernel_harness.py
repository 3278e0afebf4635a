"""A real ipykernel (the venv's python) driven by jupyter_client, with an iopub log."""

from __future__ import annotations

import json
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

STARTUP_TIMEOUT = 60.0


def kernel_spec_dir(root: Path) -> Path:
    """A kernelspec that runs exactly this interpreter (not whatever 'python3' resolves to)."""
    spec = root / "kernels" / "lnb-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "letta_nb test",
                "language": "python",
            }
        )
    )
    return root / "kernels"


@dataclass
class Kernel:
    km: KernelManager
    env: dict[str, str]
    log: list[dict[str, Any]] = field(default_factory=list)
    kc: Any = None

    def start(self) -> None:
        self.km.start_kernel(env=self.env)
        self._connect()

    def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=STARTUP_TIMEOUT)

    def restart(self) -> None:
        self.kc.stop_channels()
        self.km.restart_kernel(now=True, env=self.env)
        self._connect()
        self.log.clear()

    def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def pump(self, seconds: float) -> None:
        """Collect iopub messages for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.log.append(self.kc.get_iopub_msg(timeout=min(left, 0.2)))
            except queue.Empty:
                continue

    def pump_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Collect iopub messages until `done()` holds (checked every 0.2 s) or `timeout`."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.pump(0.2)
        return True

    def submit(self, code: str) -> str:
        """Send an execute_request without waiting; returns its msg_id."""
        return self.kc.execute(code)

    def wait_idle(self, msg_id: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            self.log.append(msg)
            if (
                msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == msg_id
            ):
                return
        raise TimeoutError(f"cell {msg_id} did not finish in {timeout} s")

    def run(self, code: str, timeout: float = 60.0) -> str:
        msg_id = self.submit(code)
        self.wait_idle(msg_id, timeout)
        return msg_id

    def stdout(self, msg_id: str) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.log
            if m["msg_type"] == "stream"
            and m["content"]["name"] == "stdout"
            and m["parent_header"].get("msg_id") == msg_id
        )

    def errors(self) -> list[dict[str, Any]]:
        return [
            m
            for m in self.log
            if m["msg_type"] == "error"
            or (m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
        ]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_states(log: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a front end knows: each comm's state after replaying comm_open/update messages."""
    states: dict[str, dict[str, Any]] = {}
    for msg in log:
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            states[content["comm_id"]] = dict(content["data"].get("state", {}))
        elif msg["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            states.setdefault(content["comm_id"], {}).update(content["data"].get("state", {}))
        elif msg["msg_type"] == "comm_close":
            states.pop(content["comm_id"], None)
    return states


def widget_tree(states: dict[str, dict[str, Any]], model_id: str) -> list[dict[str, Any]]:
    """The states of `model_id` and its descendants (through `children`), depth first."""
    state = states.get(model_id)
    if state is None:
        return []
    out = [state]
    for child in state.get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            out += widget_tree(states, child.removeprefix("IPY_MODEL_"))
    return out


@dataclass(frozen=True)
class KernelVariant:
    """Which ipykernel a test kernel runs: the venv's, or one from `pythonpath`."""

    id: str
    version_prefix: str  # what `ipykernel.__version__` must start with inside the kernel
    pythonpath: Path | None = None


#: Run in each new kernel: which ipykernel it really is, and where its companions come from.
VERSION_PROBE = """\
def _lnb_probe():
    import importlib, json
    found = {}
    for name in ("ipykernel", "IPython", "jupyter_client", "tornado", "zmq", "comm"):
        mod = importlib.import_module(name)
        found[name] = [str(getattr(mod, "__version__", getattr(mod, "version", "?"))),
                       mod.__file__]
    print(json.dumps(found))
_lnb_probe()
del _lnb_probe
"""


def check_kernel_versions(kernel: Kernel, variant: KernelVariant) -> dict[str, Any]:
    """Assert the kernel runs `variant`'s ipykernel and the venv's IPython/jupyter_client/…"""
    probe = kernel.run(VERSION_PROBE)
    assert not kernel.errors(), kernel.errors()
    found: dict[str, Any] = json.loads(kernel.stdout(probe))
    version, where = found["ipykernel"]
    assert version.startswith(variant.version_prefix), found
    home = variant.pythonpath if variant.pythonpath is not None else Path(sys.prefix)
    assert Path(where).resolve().is_relative_to(home.resolve()), found
    for name in ("IPython", "jupyter_client", "tornado", "zmq", "comm"):
        assert Path(found[name][1]).resolve().is_relative_to(Path(sys.prefix).resolve()), found
    kernel.log.clear()
    return found


def make_kernel(root: Path, env: dict[str, str]) -> Kernel:
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_spec_dir(root))])
    km = KernelManager(kernel_name="lnb-test", kernel_spec_manager=ksm)
    return Kernel(km, env)
