"""Issue 15.5: a 40-item batch whose kernel is killed midway, then re-run in the new kernel:
40 answers, exactly 40 runs and exactly 40 conversations on the server (no item sent twice,
none lost, none given a second conversation), each conversation holding only its own item's
message and answer (checked through letta-client, not through letta_nb).

The server lives in the test process (see conftest.py), so the runs go on while the kernel is
dead; `restart_kernel(now=True)` kills the kernel process (no shutdown, nothing flushed).
Runs on ipykernel 7.4 and 6.31 like every kernel test.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from letta_nb.backend import Backend
from tests.kernel.kernel_harness import Kernel, KernelVariant, check_kernel_versions

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

ITEMS = 40
TOKENS = 12
SETUP = (
    "import json, letta_nb as lnb, pandas as pd\n"
    "lnb.connect(agent={agent!r})\n"
    "df = pd.DataFrame({{'delay': [30 + 5 * (i % 4) for i in range({n})]}},\n"
    "                  index=[f'row-{{i}}' for i in range({n})])\n"
    "batch = lnb.map(df, '/long {tokens} {{delay}}', concurrency=4)\n"
    "print(json.dumps({{'key': batch.key, 'status': batch.status}}))"
)
CHECK = (
    "st = batch.wait(180)\n"
    "f = batch.frame\n"
    "print(json.dumps({'status': st, 'counts': batch.counts, 'key': batch.key,\n"
    "  'answers': int(f.answer.notna().sum()),\n"
    f"  'whole': bool(f.answer.str.endswith(' token{TOKENS}').all()),\n"
    "  'runs': sorted(f.run_id), 'index': list(f.index[:2]),\n"
    "  'items': [[batch.runner.messages[i.pos], i.conversation_id, i.answer, i.runs]\n"
    "            for i in batch.items]}))"
)


def _last_json(kernel: Kernel, msg_id: str) -> dict[str, Any]:
    out = kernel.stdout(msg_id).strip().splitlines()
    assert out, [e["content"] for e in kernel.errors()]
    return json.loads(out[-1])


def test_a_killed_kernel_rerun_gives_every_answer_and_sends_nothing_twice(
    kernel: Kernel, kernel_server: Any, kernel_variant: KernelVariant, check_isolation: Any
) -> None:
    backend = Backend(kernel_server.base_url, None)
    agent = backend.create_agent(f"batch-kill-{uuid.uuid4().hex[:8]}")
    setup = SETUP.format(agent=agent["name"], n=ITEMS, tokens=TOKENS)
    first = _last_json(kernel, kernel.run(setup))
    assert first["status"] == "running"

    def runs() -> list[dict[str, Any]]:
        return backend.list_runs(agent_id=agent["id"], limit=1000)

    deadline = time.monotonic() + 120
    while sum(1 for r in runs() if r["status"] == "completed") < 12:  # bounded polling
        assert time.monotonic() < deadline, "the batch did not get going"
        time.sleep(0.1)
    before = runs()
    assert len(before) < ITEMS, "the kill must come midway"
    assert any(r["status"] in ("created", "running") for r in before), "some are running"
    made = backend.list_conversations(agent["id"], limit=1000)
    assert len(before) <= len(made) < ITEMS, "the kill comes midway: not every item has one"
    kernel.restart()  # killed: the runs in flight go on on the server
    check_kernel_versions(kernel, kernel_variant)
    again = _last_json(kernel, kernel.run(setup))
    assert again["key"] == first["key"]  # the same batch, found from the disk
    done = _last_json(kernel, kernel.run(CHECK, timeout=240))
    assert done["status"] == "done" and done["counts"] == {"completed": ITEMS}, done
    assert done["answers"] == ITEMS and done["whole"] and done["index"] == ["row-0", "row-1"]
    server = runs()
    assert len(server) == ITEMS, f"{len(server)} runs on the server for {ITEMS} items"
    assert sorted(r["id"] for r in server) == done["runs"]
    assert {r["status"] for r in server} == {"completed"}
    items = [(m, conv, answer, runs) for m, conv, answer, runs in done["items"]]
    assert [m for m, *_ in items] == [f"/long {TOKENS} {30 + 5 * (i % 4)}" for i in range(ITEMS)]
    check_isolation(kernel_server.base_url, agent["id"], items)  # exactly 40 conversations
    assert not [e for e in kernel.errors() if e["msg_type"] == "error"]
