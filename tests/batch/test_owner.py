"""One kernel at a time runs a batch: a second kernel on the same state sends nothing (a one-line
`BatchInUse`), and takes over once the first one is done, detached or dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from letta_nb._filelock import HeldLock
from letta_nb.batch import owner_lock
from letta_nb.core.errors import BatchInUse
from letta_nb.session import Session
from tests.batch.batch_helpers import BOUND, conversations_of, make_session, until


def test_a_second_kernel_sends_nothing_while_the_first_runs_the_batch(
    session: Session, tmp_path: Path, embedded_server: str,
    runs_of: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    messages = [f"/long 12 {30 + i}" for i in range(6)]
    first = session.map(messages, concurrency=2)
    assert until(lambda: first.runner.in_flight > 0)
    other = make_session(embedded_server, tmp_path / "cursors.db")  # a second kernel
    other.agent = session.agent
    with pytest.raises(BatchInUse) as err:
        other.map(messages, concurrency=2)
    assert f"batch {first.key} is being run by another kernel (pid {os.getpid()})" in str(err.value)
    assert "\n" not in str(err.value) and other.batches() == []
    assert first.wait(BOUND) == "done"
    again = other.map(messages, concurrency=2)  # the first is done: shown from the store
    assert again.status == "done" and again.frame.equals(first.frame)
    assert len(runs_of()) == 6 and len(conversations_of(session)) == 6


def test_a_detached_batch_can_be_taken_over(
    session: Session, tmp_path: Path, embedded_server: str,
    runs_of: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    messages = [f"/long 10 {30 + i}" for i in range(5)]
    first = session.map(messages, concurrency=1)
    assert until(lambda: first.runner.in_flight > 0)
    first.detach()  # this kernel lets go: the other may run it
    other = make_session(embedded_server, tmp_path / "cursors.db")
    other.agent = session.agent
    taken = other.map(messages, concurrency=2)
    assert taken.wait(BOUND) == "done" and taken.counts == {"completed": 5}
    assert len(runs_of()) == 5 and len(conversations_of(session)) == 5


HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from letta_nb._filelock import HeldLock\n"
    "lock = HeldLock(Path(sys.argv[1]))\n"
    "assert lock.acquire() is None\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "batches" / "k.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        mine = HeldLock(path)
        assert mine.acquire() == child.pid and not mine.held
        assert (path.stat().st_mode & 0o777) == 0o600
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        os.kill(child.pid, signal.SIGKILL)  # the kernel dies: the OS drops its lock
        child.wait(BOUND)
        assert mine.acquire() is None and mine.held
        assert mine.acquire() is None  # held here already: taking it again is a no-op
        mine.release()
        assert not mine.held
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(BOUND)


def test_batch_locks_are_per_key_beside_the_store(tmp_path: Path) -> None:
    a = owner_lock(tmp_path / "cursors.db", "batch:key:mine")
    b = owner_lock(tmp_path / "cursors.db", "batch:key:other/../x")
    assert a.path.parent == b.path.parent == tmp_path / "batches" and a.path != b.path
    assert a.acquire() is None and b.acquire() is None
    a.release()
    b.release()


def test_a_stale_copy_rereads_the_batch_before_it_retries(
    session: Session, tmp_path: Path, embedded_server: str,
    runs_of: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    """Kernel A showed a batch and went idle; kernel B retried its failed item. A's `retry()`
    on its old copy must start attempt 2, not send B's attempt 1 (its otid, its summary) again."""
    messages = ["/long 3 1", "/fail", "/long 3 2"]
    first = session.map(messages, concurrency=2)
    assert first.wait(BOUND) == "done" and first.counts == {"completed": 2, "failed": 1}
    other = make_session(embedded_server, tmp_path / "cursors.db")  # kernel B
    other.agent = session.agent
    taken = other.map(messages, concurrency=2)
    assert taken.retry() == 1 and taken.wait(BOUND) == "done"
    assert taken.items[1].attempt == 1
    assert first.items[1].attempt == 0  # A's copy is stale
    assert first.retry() == 1 and first.wait(BOUND) == "done"
    assert first.items[1].attempt == 2  # A read B's attempt before making its own
    summaries = [c.get("summary") for c in conversations_of(session)]
    assert len(summaries) == len(set(summaries)) == 5  # 3 items + 2 retries, none twice
    assert len(runs_of()) == 5
