"""The batch's runner: one scheduler thread sends items, follows them, records their results.

Every item in flight is a run chain (`run.Follower`: reconnects, holes, approvals) read on a
thread of the item's own, the one that made its conversation; the runner never reads a stream
itself. Followers only tell the runner *that* an item changed (`chains.py`); the runner thread
decides what follows (`plan.py`), stores each item's state in `cursors.db` and drops an item's
follower once the item is over, keeping its answer text and counters: memory is per item,
never per frame.

What goes wrong, and what the runner does:
- the server refuses an item (4xx, a model failure): the item fails, the batch goes on;
- a 429: the pace halves and nothing is sent until its `Retry-After` has passed; the item
  waits in the queue and is sent again with the same otid (nothing was started);
- the server is unreachable (a refused send, a stream that keeps breaking): the batch pauses
  ("paused: server unreachable"), asks the server again with a growing interval and carries
  on by itself once it answers; the items are resumed from their cursors or re-sent with
  their otid (the server re-attaches);
- the kernel dies: the next `lnb.map(...)` with the same key reads the stored items: finished
  ones are shown as they are, running ones followed from their cursor, unsent ones sent.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .._filelock import HeldLock
from ..core.clock import SYSTEM, Clock
from ..core.errors import (
    ApprovalError,
    BatchInUse,
    LettaNbError,
    RateLimited,
    ServerUnavailable,
    StreamInterrupted,
)
from ..core.render import one_line
from ..core.status import ChainStatus
from ..core.transcript import Transcript
from ..run import Follower, Policy, new_thread
from .chains import ItemChains
from .plan import RESUME, SEND, Pace, Probe, ReadyQueue
from .state import (
    CANCELLED,
    DETACHED,
    FAILED,
    OWED,
    PENDING,
    RUNNING,
    STARTING,
    WAITING,
    BatchStatus,
    ItemState,
)

if TYPE_CHECKING:
    from ..core.cursor import CursorStore
    from .sender import ItemSender

log = logging.getLogger("letta_nb")

#: Chain statuses after which a follower reads nothing more for this item.
_ENDED = frozenset(
    {ChainStatus.COMPLETED, ChainStatus.FAILED, ChainStatus.CANCELLED, ChainStatus.INCOMPLETE}
)
#: Resumes of one attempt after transient failures (the server answering health checks).
MAX_RESUMES = 3
#: Finishes the rate (items/s) and the ETA are measured over.
RATE_WINDOW = 50
#: The longest the runner thread sleeps without an event (seconds).
IDLE_WAKE = 1.0
#: A reconnecting follower makes the runner ask the server at most this often (seconds).
SUSPECT_EVERY = 2.0


class Runner:
    """Sends and follows the items of one batch (see the module doc)."""

    def __init__(
        self,
        *,
        key: str,
        items: list[ItemState],
        messages: list[str],
        sender: ItemSender,
        store: CursorStore,
        concurrency: int,
        policy: str | Policy | None = None,
        timeout: float | None = None,
        clock: Clock = SYSTEM,
        owner: HeldLock | None = None,
    ) -> None:
        self.key = key
        #: Held while this process sends or follows the batch's items (see `_claim`).
        self.owner = owner
        self.items = items
        self.messages = messages
        self.sender = sender
        self.store = store
        self.policy = policy
        self.timeout = timeout
        self.clock = clock
        self.pace = Pace(concurrency)
        self.queue = ReadyQueue()
        self.probe = Probe()
        #: One line while the server cannot be reached (the batch waits for it).
        self.paused: str | None = None
        #: Bumped on every change of an item (views diff by `versions`).
        self.version = 0
        self.versions = [0] * len(items)
        self.started = clock.monotonic()
        #: The items with a follower (in flight, waiting for a person).
        self._chains = ItemChains(key, store, clock, self._kick)
        self._flight: set[int] = set()  # items holding a slot
        self._events: collections.deque[int] = collections.deque()
        self._dirty: dict[int, bool] = {}  # pos → drop the stored records
        self._finished: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW)
        self._wake = threading.Event()
        self._quiet = threading.Event()  # nothing owed: wait() returns
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._running = False  # a runner thread owns the loop (see `_kick`)
        self._deciding: set[int] = set()
        self._cancelled = False
        self._changed = False  # something views show changed since they were told
        self._suspected_at = float("-inf")
        self._probe_wanted = False
        self._last_refusal: str | None = None
        self._listeners: list[Callable[[Runner], object]] = []
        self._context = contextvars.copy_context()
        self._deferred = threading.local()  # on an item's own thread: its reader, for later

    # ---- lifecycle ---------------------------------------------------------------------------
    def _claim(self) -> None:
        """One process at a time works on a batch: a second kernel would give the items it
        finds unsent conversations of their own too. Raises `BatchInUse` (nothing changed)."""
        if self.owner is None:
            return
        taking = not self.owner.held
        holder = self.owner.acquire()
        if holder is not None:
            who = f"pid {holder}" if holder else "another process"
            raise BatchInUse(
                f"batch {self.key} is being run by another kernel ({who}); nothing was sent",
                hint="wait for it to finish there (or detach it there), then run this again",
            )
        if taking:
            self._reread()

    def _reread(self) -> None:
        """The batch was just taken (again): another kernel may have worked on it since this
        copy was read (retried items, finished them). Items nobody follows here take their
        stored state, so a retry here never repeats an attempt made there."""
        stored = self.store.batch_items(self.key)
        with self._lock:
            for pos, record in stored.items():
                if pos >= len(self.items) or pos in self._chains or pos in self._flight:
                    continue
                item = self.items[pos]
                fresh = ItemState.from_record(pos, record)
                if fresh.digest != item.digest or fresh.to_record() == item.to_record():
                    continue
                for name, value in fresh.to_record().items():
                    setattr(item, name, value)
                item.resumes, item.cancel_reason = 0, None
                self.version += 1
                self.versions[pos] = self.version
                self._changed = True

    def _release_if_idle(self) -> None:
        """Under the lock: nothing queued or in flight, so another kernel may take over."""
        if self.owner is not None and not self.owed:
            self.owner.release()

    def start(self) -> None:
        """Queue what is owed (unsent, sent, running, detached), restore waiting items."""
        if any(item.status in OWED or item.status == DETACHED for item in self.items):
            self._claim()
        with self._lock:
            for item in self.items:
                if item.status == PENDING:
                    self.queue.push(item.pos, rank=SEND)
                elif item.status in (STARTING, RUNNING, DETACHED):
                    self.queue.push(item.pos, rank=RESUME)
                elif item.status == WAITING and item.pos not in self._chains:
                    self._restore_waiting(item)
            self._ensure_running()

    def _ensure_running(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._quiet.clear()
            self._wake.set()
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(
                target=self._context.run,
                args=(self._loop,),
                name=f"letta-nb-batch-{self.key[-8:]}",
                daemon=True,
            )
            self._thread.start()

    def _kick(self, pos: int) -> None:
        """From a reader thread: item `pos` changed (restarts an idle runner thread)."""
        self._events.append(pos)
        self._wake.set()
        if not self._running:
            self._ensure_running()

    def close(self) -> None:
        """Stop here (the runs go on on the server; a re-run re-attaches)."""
        self._stop.set()
        self._wake.set()
        self._quiet.set()
        with self._lock:
            chains = self._chains.values()
            self._flush()
        for chain in chains:
            chain.detach()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        if self.owner is not None:
            self.owner.release()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    # ---- listeners (views) -------------------------------------------------------------------
    def add_listener(self, fn: Callable[[Runner], object]) -> None:
        self._listeners = [*self._listeners, fn]

    def remove_listener(self, fn: Callable[[Runner], object]) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def _publish(self) -> None:
        """Tell the listeners (never under the runner's lock: a view reads the runner under
        its own lock, so calling it under ours could deadlock)."""
        if self._changed:
            self._changed = False
            self._notify()

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn(self)
            except Exception:  # a broken view never stops the batch
                log.debug("letta_nb batch listener failed", exc_info=True)

    # ---- what front ends read ----------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._flight)

    @property
    def owed(self) -> bool:
        """Work is left that needs nobody: items queued or in flight."""
        return bool(self.queue) or bool(self._flight)

    @property
    def status(self) -> str:
        """`running`, `paused`, `waiting` (only approvals left), `detached` or `done`."""
        with self._lock:
            if self.owed:
                if self._stop.is_set():
                    return BatchStatus.DETACHED
                return BatchStatus.PAUSED if self.paused else BatchStatus.RUNNING
            statuses = {item.status for item in self.items}
        if WAITING in statuses:
            return BatchStatus.WAITING
        if DETACHED in statuses or statuses & OWED:
            return BatchStatus.DETACHED
        return BatchStatus.DONE

    def chain(self, pos: int) -> Follower | None:
        """The item's follower while it has one (in flight or waiting for approval)."""
        return self._chains.get(pos)

    def chains(self) -> list[tuple[int, Follower]]:
        with self._lock:
            return self._chains.items()

    def rate(self) -> float | None:
        """Items finished per second, over the last `RATE_WINDOW` finishes."""
        done = list(self._finished)
        if not done:
            return None
        now = self.clock.monotonic()
        span = now - (done[0] if len(done) > 1 else self.started)
        return len(done) / span if span > 0 else None

    def wait(self, timeout: float) -> str:
        """Block until nothing is owed (every item over or waiting for a person) or `timeout`."""
        self.clock.wait(self._quiet, min(max(0.0, timeout), threading.TIMEOUT_MAX))
        return self.status

    # ---- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wake_at: float | None
            with self._lock:
                for pos in list(self._deciding):  # chains whose policy may still answer
                    self._events.append(pos)
                self._drain()
                now = self.clock.monotonic()
                preparing: list[tuple[ItemState, bool]] = []
                if self.paused is None:
                    self._check_timeouts(now)
                    preparing = self._launch_ready(now)
                elif self.probe.next_at is None or now >= self.probe.next_at:
                    self._probe_wanted = True
                probe, self._probe_wanted = self._probe_wanted, False
                self._flush()
                idle = not (self.owed or probe or self._events or self._deciding)
                if idle:
                    self._running = False
                    self._thread = None
                    self._release_if_idle()
            self._publish()  # views hear of the changes outside the lock (they take theirs)
            if idle:
                with self._lock:
                    if not self._running:  # the final state went out before wait() returns
                        self._quiet.set()
                if self._events:  # an event that came while this thread was leaving
                    self._ensure_running()
                return
            if preparing:  # outside the lock: a slow server never blocks cancel() or the views
                self._prepare_each(preparing)
            if probe:  # the same
                answers = self._server_answers()
                with self._lock:
                    self._probed(answers)
            if preparing or probe:
                self._publish()
                continue
            with self._lock:
                wake_at = self._next_wake(now)
            delay = IDLE_WAKE if wake_at is None else max(0.0, min(IDLE_WAKE, wake_at - now))
            self.clock.wait(self._wake, delay)

    def _next_wake(self, now: float) -> float | None:
        if self.paused is not None:
            return self.probe.next_at
        times = []
        ready = self.queue.next_at()
        if ready is not None and len(self._flight) < self.pace.limit:
            times.append(max(ready, self.pace.hold_until))
        if self.timeout is not None and self._flight:
            times.append(now + 0.25)
        if self._deciding:
            times.append(now + 0.02)
        return min(times) if times else None

    def _drain(self) -> None:
        """Observe every item that changed; an event that comes while its item is observed
        (e.g. the end of a run being cancelled here) gets a round of its own."""
        events = self._events
        while events:
            batch: dict[int, None] = {}
            while events:
                batch[events.popleft()] = None
            for pos in batch:
                self._observe(pos)

    # ---- launching ---------------------------------------------------------------------------
    def _launch_ready(self, now: float) -> list[tuple[ItemState, bool]]:
        """Resume what is ready to be read again; return the items to prepare (with whether
        an earlier prepare or send of the attempt may have reached the server): unsent ones,
        and sent ones whose run was never named. Each holds its slot from here; an unsent
        one's `started_at` is stored before its conversation is made."""
        slots = self.pace.slots(now, len(self._flight))
        if not slots:
            return []
        preparing: list[tuple[ItemState, bool]] = []
        for pos in self.queue.pop_ready(now, slots):
            item = self.items[pos]
            if item.status == STARTING and item.run_id is None:
                self._flight.add(pos)  # sent, its run never named: look in its conversation
                preparing.append((item, True))
            elif item.status != PENDING:
                self._resume(item)
            elif self._cancelled:
                self._cancel_unsent(item)
            else:
                again = item.started_at is not None  # a kernel died, a create broke
                item.started_at = item.started_at or self.clock.time()
                self._flight.add(pos)
                self._touch(item)
                preparing.append((item, again))
        return preparing

    def _prepare_each(self, preparing: list[tuple[ItemState, bool]]) -> None:
        """Each item on a thread of its own, which makes its conversation, then reads its run.

        Creating a conversation is a server round trip (about 100 ms to Letta Cloud); made one
        after another on the runner thread they would bound the batch at one item per round
        trip whatever its concurrency, and keep that thread from hearing of the items that
        finish meanwhile. The same thread then runs the item's reader (`_spawn`): one thread
        per item, as a hand-written pool has, and none started under the runner's lock."""
        for item, again in preparing:
            ctx = contextvars.copy_context()
            threading.Thread(
                target=ctx.run,
                args=(self._prepare_and_send, item, again),
                name=f"letta-nb-item-{item.pos}",
                daemon=True,
            ).start()

    def _prepare_and_send(self, item: ItemState, again: bool) -> None:
        """Make the item's conversation (a server call, outside the runner's lock), store it,
        then send: a kernel that dies after a send always knows where it went. A sent item
        whose conversation already has its run follows that run instead."""
        failure: LettaNbError | None = None
        if not self._stop.is_set() and item.status in (PENDING, STARTING):
            try:
                self.sender.prepare(item, again=again)
            except LettaNbError as exc:
                failure = exc
            except Exception as exc:  # a bug fails its item, never leaves it in flight for ever
                failure = LettaNbError(f"preparing the item failed: {type(exc).__name__}: {exc}")
        readers: list[Callable[[], None]] = []
        self._deferred.runs = readers
        try:
            with self._lock:
                self._prepared(item, failure)
        finally:
            self._deferred.runs = None
        self._wake.set()  # the runner thread tells the views (and may launch the next one)
        for read in readers:
            read()  # the item's reader, here, outside the lock

    def _spawn(self, run: Callable[[], None], name: str) -> threading.Thread:
        """The followers' `Spawn`: on an item's own thread (`_prepare_and_send`) its reader
        runs there once the runner's lock is let go; anywhere else on a thread of its own."""
        later: list[Callable[[], None]] | None = getattr(self._deferred, "runs", None)
        if later is None:
            return new_thread(run, name)
        later.append(run)
        return threading.current_thread()

    def _prepared(self, item: ItemState, failure: LettaNbError | None) -> None:
        """Under the lock: the prepared item is sent, followed, or let go."""
        if failure is not None and item.status in (PENDING, STARTING):
            self._launch_failed(item, failure)
            self._flush()
            return
        if item.status == PENDING and self._cancelled:
            self._cancel_unsent(item)
        if item.status not in (PENDING, STARTING) or self._stop.is_set():
            self._flight.discard(item.pos)  # (a re-attach sends or follows it)
            self._touch(item)  # its conversation, if it has one, is stored
            self._flush()
            return
        found = item.run_id is not None  # its conversation had its run
        item.move(RUNNING if found else STARTING)
        self._touch(item)
        self._flush()  # the item's conversation is stored before anything is sent
        if found:
            self._resume(item)
        else:
            self._send(item)

    def _send(self, item: ItemState) -> None:
        chain = self._new_chain(item)
        try:
            self.sender.send(chain, item, self.messages[item.pos], self._otid(item))
        except LettaNbError as exc:
            self._launch_failed(item, exc)

    def _otid(self, item: ItemState) -> str:
        from .keys import item_otid

        return item_otid(self.key, item.pos, item.attempt)

    def _resume(self, item: ItemState) -> None:
        """An item whose run is named: follow it (from its stored cursor when it has one)."""
        self._flight.add(item.pos)
        try:
            chain = self._chains.get(item.pos)
            if chain is not None and chain.resume():
                return
            chain = self._rebuilt(item)
            rid = item.run_id
            assert rid is not None
            chain.follow(rid, starting_after=chain.transcript.last_seq(rid))
        except LettaNbError as exc:
            self._launch_failed(item, exc)

    def _rebuilt(self, item: ItemState) -> Follower:
        """A follower for a running item, from its stored transcript when it matches."""
        transcript = self._chains.stored_transcript(item, this_attempt=True) or Transcript()
        for rid in item.runs:
            transcript.tracker(rid)
        return self._new_chain(item, transcript)

    def _restore_waiting(self, item: ItemState) -> None:
        """An item that waited for an approval when this kernel went away."""
        transcript = self._chains.stored_transcript(item, this_attempt=False)
        if transcript is None or not transcript.pending_tool_calls():
            item.move(RUNNING)  # nothing to answer from here: read the run again
            self.queue.push(item.pos, rank=RESUME)
            return
        chain = Follower.restored(
            self.sender.backend,
            agent_id=self.sender.agent_id,
            transcript=transcript,
            status=ChainStatus.REQUIRES_APPROVAL,
            run_id=item.run_id,
            active_seconds=item.duration or 0.0,
            policy=self.policy,
            server_durations=False,
            conversation_id=item.conversation_id,
        )
        self._chains.watch(item, chain)
        decision = chain.decide()
        if decision is not None:
            self._answer_chain(chain, *decision)

    def _new_chain(self, item: ItemState, transcript: Transcript | None = None) -> Follower:
        self._unwatch(item.pos)
        chain = self.sender.chain(item, transcript)
        chain.policy = self.policy  # `lnb.map(..., policy=)` of the newest call
        chain.spawn = self._spawn
        self._chains.watch(item, chain)
        return chain

    def _unwatch(self, pos: int) -> None:
        self._deciding.discard(pos)
        self._chains.unwatch(pos)

    def _drop_chain(self, pos: int) -> None:
        self._deciding.discard(pos)
        self._chains.drop(pos)
        self._flight.discard(pos)

    # ---- observing followers -----------------------------------------------------------------
    def _observe(self, pos: int) -> None:
        chain = self._chains.get(pos)
        if chain is None:
            return
        item = self.items[pos]
        status = chain.status
        self._deciding.discard(pos)
        named = False
        for rid in chain.runs:
            named = item.add_run(rid) or named
        if status in (ChainStatus.STARTING, ChainStatus.RUNNING):
            if chain.warning and chain.warning.startswith("reconnecting"):
                self._suspect()
            if chain.run_id is not None and item.status in (STARTING, WAITING, DETACHED):
                item.move(RUNNING)
                named = True
            if item.status == RUNNING:
                self._flight.add(pos)
            if named:
                self._touch(item)
                if self._cancelled or item.cancel_reason:
                    self._cancel_chain(item, chain)
        elif status == ChainStatus.REQUIRES_APPROVAL:
            if chain.policy is not None and not chain.settled:
                self._deciding.add(pos)  # its policy is about to answer: not waiting yet
                return
            item.move(WAITING)
            item.duration = round(chain.active_seconds, 3)
            self._flight.discard(pos)
            self._touch(item)
            if self._cancelled:
                self._cancel_chain(item, chain)
        elif status in _ENDED:
            self._finish(item, chain, str(status))
        elif status == ChainStatus.ERROR:
            self._chain_error(item, chain)
        elif status == ChainStatus.DETACHED:
            item.move(DETACHED)
            self._flight.discard(pos)
            self._touch(item)

    def _finish(self, item: ItemState, chain: Follower, status: str) -> None:
        tr = chain.transcript
        answer = tr.assistant_text()
        item.answer = answer if answer or status != CANCELLED else None
        item.stop_reason = tr.stop_reason
        item.tokens = tr.total_tokens()
        item.duration = round(chain.active_seconds, 3)
        error = chain.error or (str(tr.error.text) if tr.error is not None else None)
        if status == CANCELLED and item.cancel_reason:
            error = item.cancel_reason
        elif status == ChainStatus.INCOMPLETE:
            error = error or chain.notice
        item.error = one_line(error) or None
        item.ended_at = self.clock.time()
        item.move(status)
        self._drop_chain(item.pos)
        self._touch(item, drop_records=True)
        self._finished.append(self.clock.monotonic())
        self.pace.succeeded()

    def _chain_error(self, item: ItemState, chain: Follower) -> None:
        exc = chain.failure
        self._flight.discard(item.pos)
        if isinstance(exc, RateLimited):
            at = self.pace.limited(self.clock.monotonic(), exc.retry_after)
            if item.run_id is None and item.status == STARTING:
                item.move(PENDING)  # refused before anything started: it is unsent
            self._requeue(item, at)
        elif exc is None or isinstance(exc, ServerUnavailable | StreamInterrupted):
            self._transient(item, chain, str(exc) if exc else chain.error)
        else:  # the server refused it: this item fails, the batch goes on
            self._fail(item, chain, str(exc))
        self._touch(item)

    def _transient(self, item: ItemState, chain: Follower | None, error: str | None) -> None:
        """A failure that may pass (a broken link, a server away): ask the server, and send
        or follow the item again later; an item that keeps failing with the server up fails."""
        self._probe_wanted = True
        if self.paused is None:
            item.resumes += 1
        if item.resumes > MAX_RESUMES:
            self._fail(item, chain, error)
            return
        delay = 0.5 * 2 ** max(0, item.resumes - 1)
        self._requeue(item, self.clock.monotonic() + delay)

    def _requeue(self, item: ItemState, at: float) -> None:
        if item.run_id is None:
            self._drop_chain(item.pos)  # nothing named: send the same otid again (`_resend`)
        self.queue.push(item.pos, at=at, rank=RESUME if item.status != PENDING else SEND)

    def _fail(self, item: ItemState, chain: Follower | None, error: str | None) -> None:
        if chain is not None:
            tr = chain.transcript
            item.answer = tr.assistant_text() or None
            item.tokens = tr.total_tokens()
            item.duration = round(chain.active_seconds, 3)
        item.error = one_line(error) or "failed"
        item.ended_at = self.clock.time()
        item.move(FAILED)
        self._drop_chain(item.pos)
        self._touch(item, drop_records=True)
        self._finished.append(self.clock.monotonic())

    def _launch_failed(self, item: ItemState, exc: LettaNbError) -> None:
        """A send or resume that failed before any reader started."""
        self._flight.discard(item.pos)
        if isinstance(exc, RateLimited):
            if item.run_id is None and item.status == STARTING:
                item.move(PENDING)
            self._requeue(item, self.pace.limited(self.clock.monotonic(), exc.retry_after))
        elif isinstance(exc, ServerUnavailable | StreamInterrupted):
            self._transient(item, self._chains.get(item.pos), str(exc))
        else:
            self._fail(item, self._chains.get(item.pos), str(exc))
        self._touch(item)

    # ---- a server that went away ---------------------------------------------------------------
    def _suspect(self) -> None:
        """A follower is reconnecting: ask the server (at most every few seconds); the sends
        pause if it does not answer (the followers go on reconnecting by themselves)."""
        now = self.clock.monotonic()
        if self.paused is None and now - self._suspected_at >= SUSPECT_EVERY:
            self._suspected_at = now
            self._probe_wanted = True

    def _server_answers(self) -> bool:
        try:
            self.sender.backend.health()
        except LettaNbError as exc:
            self._last_refusal = str(exc)
            return False
        return True

    def _probed(self, answers: bool) -> None:
        """The answer of a health check (taken outside the lock)."""
        now = self.clock.monotonic()
        if answers:
            if self.paused is not None:
                self.paused = None
                self.probe.reset()
                self.version += 1
                self._changed = True
            return
        if self.paused is None:
            why = one_line(self._last_refusal or "no answer")[:160]
            self.paused = f"paused: server unreachable ({why})"
            self.probe.reset()
            self.version += 1
            self._changed = True
        self.probe.failed(now)

    # ---- time limits and cancelling ----------------------------------------------------------
    def _check_timeouts(self, now: float) -> None:
        limit = self.timeout
        if limit is None:
            return
        for pos in list(self._flight):
            item = self.items[pos]
            chain = self._chains.get(pos)
            if chain is None or item.cancel_reason or item.run_id is None:
                continue
            if chain.active_seconds > limit:
                item.cancel_reason = f"timed out after {limit:g} s (cancelled on the server)"
                self._cancel_chain(item, chain)

    def _cancel_chain(self, item: ItemState, chain: Follower) -> None:
        try:
            chain.cancel()
        except LettaNbError as exc:
            log.warning("letta_nb: cancelling item %s of %s failed: %s", item.pos, self.key, exc)

    def _cancel_unsent(self, item: ItemState) -> None:
        self.queue.discard(item.pos)
        item.cancel_reason = item.cancel_reason or "cancelled before it was sent"
        item.error = item.cancel_reason
        item.ended_at = self.clock.time()
        item.move(CANCELLED)
        self._touch(item)

    def cancel(self) -> dict[str, str]:
        """Cancel every unsent and running item; running ones on the server, in one request."""
        running: list[ItemState] = []
        waiting: list[tuple[ItemState, Follower]] = []
        with self._lock:
            self._cancelled = True
            for item in self.items:
                if item.status == PENDING:
                    self._cancel_unsent(item)
                elif item.status in (STARTING, RUNNING, DETACHED, WAITING):
                    item.cancel_reason = "cancelled (Batch.cancel)"
                    chain = self._chains.get(item.pos)
                    if item.status == WAITING and chain is not None:
                        waiting.append((item, chain))
                    elif item.run_id is not None or item.status == STARTING:
                        running.append(item)
                    if item.status == DETACHED and item.pos not in self.queue:
                        self.queue.push(item.pos, rank=RESUME)  # read it to its end
            self._flush()
            self._ensure_running()
        self._publish()
        result = self.sender.cancel(running)
        for item, chain in waiting:
            self._cancel_chain(item, chain)
        self._wake.set()
        return result

    # ---- people: approvals, retries, resuming --------------------------------------------------
    def waiting(self) -> list[tuple[int, Follower]]:
        with self._lock:
            return [
                (pos, chain)
                for pos, chain in self._chains.items()
                if self.items[pos].status == WAITING
                and chain.status == ChainStatus.REQUIRES_APPROVAL
            ]

    def answer(self, positions: Iterable[int] | None, approve: bool, reason: str | None) -> int:
        """Approve or deny waiting items (all of them with `positions=None`); how many."""
        self._ensure_running()
        wanted = None if positions is None else set(positions)
        done = 0
        errors: list[str] = []
        for pos, chain in self.waiting():
            if wanted is not None and pos not in wanted:
                continue
            try:
                self._answer_chain(chain, approve, reason)
                done += 1
            except LettaNbError as exc:
                errors.append(f"item {pos}: {exc}")
                continue
            with self._lock:  # the answer's run is starting: the item holds a slot again
                if self.items[pos].status == WAITING:
                    self._flight.add(pos)
                    self._ensure_running()
        if errors and not done:
            raise ApprovalError("; ".join(errors[:3]))
        return done

    def _answer_chain(self, chain: Follower, approve: bool, reason: str | None) -> None:
        chain.answer(approve, reason)

    def retry(self, statuses: Iterable[str]) -> int:
        """A new attempt (new otid, new conversation) for the items in `statuses`."""
        wanted = set(statuses)
        count = 0
        if any(item.status in wanted and item.over for item in self.items):
            self._claim()
        with self._lock:
            self._cancelled = False
            for item in self.items:
                if item.status in wanted and item.over:
                    self._drop_chain(item.pos)
                    item.reset()
                    self._touch(item, drop_records=True)
                    self.queue.push(item.pos, rank=SEND)
                    count += 1
            self._flush()
            if count:
                self._ensure_running()
        self._publish()
        return count

    def resume(self) -> int:
        """Follow detached items again (the batch was closed, or a view detached one)."""
        count = 0
        if any(item.status in (DETACHED, STARTING, RUNNING, PENDING) for item in self.items):
            self._claim()
        with self._lock:
            self._stop.clear()
            for item in self.items:
                if item.status in (DETACHED, STARTING, RUNNING) and item.pos not in self._flight:
                    if item.pos not in self.queue:
                        self.queue.push(item.pos, rank=RESUME)
                        count += 1
                elif (
                    item.status == PENDING
                    and item.pos not in self.queue
                    and item.pos not in self._flight  # not one being prepared
                ):
                    self.queue.push(item.pos, rank=SEND)
                    count += 1
            if count or self.queue:
                self._ensure_running()
        return count

    # ---- storing -----------------------------------------------------------------------------
    def _touch(self, item: ItemState, *, drop_records: bool = False) -> None:
        """The item changed: views will show it, the next flush stores it."""
        self.version += 1
        self.versions[item.pos] = self.version
        self._dirty[item.pos] = self._dirty.get(item.pos, False) or drop_records
        self._changed = True

    def _flush(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        keep = [(pos, self.items[pos].to_record()) for pos, drop in dirty.items() if not drop]
        drop = [(pos, self.items[pos].to_record()) for pos, drop in dirty.items() if drop]
        self.store.put_batch_items(self.key, keep)
        self.store.put_batch_items(self.key, drop, drop_records=True)
