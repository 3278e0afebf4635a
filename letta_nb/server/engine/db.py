"""SQLite off the event loop: every store call runs on a worker thread.

Reads go to a small pool (each thread has its own connection; WAL lets them run while a write
waits); writes go to one thread, so they keep their order and a write stuck behind another
connection's lock never holds up a read, a stream or ``/v1/health/``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from letta_nb.server.storage import Store

P = ParamSpec("P")
T = TypeVar("T")
READERS = 4


class Db:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._reads = ThreadPoolExecutor(READERS, thread_name_prefix="letta-nb-db-read")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="letta-nb-db-write")
        self._pending_writes = 0

    @property
    def writes_waiting(self) -> int:
        """Writes submitted and not finished yet (queued or running)."""
        return self._pending_writes

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, functools.partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        self._pending_writes += 1
        try:
            return await loop.run_in_executor(self._writes, functools.partial(fn, *args, **kwargs))
        finally:
            self._pending_writes -= 1

    async def warm(self) -> None:
        """Start every reader thread and open its connection now, not on a first request."""
        barrier = threading.Barrier(READERS)

        def ready() -> None:
            self.store.connection()
            barrier.wait(timeout=10)

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._reads, ready) for _ in range(READERS)))
        await self.write(self.store.connection)

    def close(self) -> None:
        self._reads.shutdown(wait=True, cancel_futures=True)
        self._writes.shutdown(wait=True)
