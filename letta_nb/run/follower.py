"""Follow one run chain in a worker thread: listeners, approvals, cancel, detach, stalls.

A chain is a send and each approval answer's new run. The `Follower` owns the reader thread
(one at a time; `stall.py` watches every chain for silence) and the state front ends read
(`_protocols.RunChain`); the reading itself is `RunReader`'s, in that thread. It never
prints: front ends draw from listeners (throttled on their side). Per frame the work is a seq
check, a transcript fold and the listener calls. The resume cursor is the transcript's per-run
seq, which includes the hidden seqs of stop_reason/usage, so a resume never asks for a frame
twice and never asks past the end (the real server then hangs forever).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import queue
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from ..core.approval import SENDING, ApprovalState
from ..core.chunks import new_otid
from ..core.clock import SYSTEM, Clock, epoch
from ..core.errors import (
    ApprovalError,
    ConfigurationError,
    LettaNbError,
    ServerUnavailable,
    StreamInterrupted,
)
from ..core.status import LIVE, SETTLED, ChainStatus
from ..core.transcript import Transcript
from ..protocol import FINAL_RUN_STATUSES, RunStatus, StopReason
from . import stall
from .reader import Ending, Opener, RunReader, Send
from .reconnect import Backoff

if TYPE_CHECKING:
    from .._protocols import ChunkStream, LettaBackend
    from ..core.chunks import Chunk

Policy = Callable[[list[dict[str, Any]]], "bool | None"]
Listener = Callable[[Any], object]
#: How a follower runs a reader: `spawn(run, name)` calls `run()` on some thread (by default a
#: new daemon thread) and returns that thread.
Spawn = Callable[[Callable[[], None], str], threading.Thread]
STALL_WARNING = "no data for {:.0f} s: the run may be stalled (Cancel stops it server-side)"
#: Bound of `wait(None)` / `wait(inf)`: a notebook cell never hangs forever.
WAIT_BOUND = 3600.0
#: A restored chain asks the server for its run durations this long after it is shown.
DURATIONS_AFTER = 0.5


class Follower:
    """One run chain (a send, then each approval's new run), read in a daemon thread."""

    backoff_base = 0.1
    backoff_cap = 2.0
    tail_timeout = 5.0  # bound on the one resume for a tail after stop_reason + EOF
    eof_checks = 3  # EOFs without progress before asking the server for the status
    recover_delays: tuple[float, ...] = (0.2, 0.5, 1.0)
    join_timeout = 5.0  # bound on waiting for a stopping/finishing reader thread
    detach_join_timeout = 1.0  # detach returns promptly even if a read cannot be interrupted

    def __init__(
        self,
        backend: LettaBackend,
        *,
        agent_id: str,
        transcript: Transcript | None = None,
        stall_after: float = 60.0,
        max_reconnects: int = 20,
        policy: str | Policy | None = None,
        clock: Clock = SYSTEM,
        conversation_id: str | None = None,
    ) -> None:
        self.backend = backend
        self.agent_id = agent_id
        #: The conversation this chain's runs belong to (None: the agent's default history).
        self.conversation_id = conversation_id
        #: The run this chain follows because its send found the conversation busy with it
        #: (the message was not sent); None when it follows its own send.
        self.busy_run: str | None = None
        #: Ask the server, once its run is named, which conversation it is in: a re-sent otid
        #: re-attaches to its run wherever that run is (a caller that lost track of the
        #: conversation made a fresh one). `on_moved(old, new)` is told when it differs.
        self.confirm_conversation = False
        self.on_moved: Callable[[str, str], object] | None = None
        self.transcript = transcript if transcript is not None else Transcript()
        self.stall_after = stall_after
        self.max_reconnects = max_reconnects
        self.policy = policy
        self.clock = clock
        self.status: ChainStatus = ChainStatus.STARTING
        self.approval: ApprovalState | None = None
        self.warning: str | None = None
        #: A lasting warning (what an incomplete run misses); progress never clears it.
        self.notice: str | None = None
        self.error: str | None = None
        #: The exception that put the chain in `error` (None otherwise): lets a caller tell a
        #: rate limit or an unreachable server (try again later) from a refusal.
        self.failure: LettaNbError | None = None
        #: Frames per resume page (`Backend.resume(batch_size=...)`); None: the server's.
        self.batch_size: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        #: Monotonic (start, end) of each stretch this chain was being worked on; a human's
        #: wait for an approval lies between two stretches. A restored chain's earlier time
        #: is `active_base` (the server's run durations, see `restored`).
        self._spans: list[list[float | None]] = []
        self.active_base = 0.0
        self.background = True
        self._run_id: str | None = self.transcript.run_id
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()  # the newest reader's; each reader keeps its own
        self._settled = threading.Event()
        self._named = threading.Event()  # the run id is known, or nothing reads
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._stream: Any = None
        self._stall_warned = False
        self._reader = RunReader(self)
        #: Where readers run (`Spawn`); a batch runs an item's first reader on the thread that
        #: made the item's conversation instead of starting one more thread per item.
        self.spawn: Spawn = new_thread

    @classmethod
    def restored(
        cls,
        backend: LettaBackend,
        *,
        agent_id: str,
        transcript: Transcript,
        status: str,
        run_id: str | None = None,
        ended_at: float | None = None,
        active_seconds: float = 0.0,
        notice: str | None = None,
        policy: str | Policy | None = None,
        stall_after: float = 60.0,
        clock: Clock = SYSTEM,
        server_durations: bool = True,
        conversation_id: str | None = None,
    ) -> Follower:
        """A chain shown from its cursor: no reader, no server call that could start a run.

        `active_seconds` (the cursor's) is shown at once; with `server_durations` the server's
        run durations (`total_duration_ns`) replace it when they arrive (a background thread,
        `DURATIONS_AFTER` seconds later on one shared worker thread, so showing a cell costs no
        thread and the first render never waits; listeners are told).
        """
        f = cls(
            backend,
            agent_id=agent_id,
            transcript=transcript,
            stall_after=stall_after,
            policy=policy,
            clock=clock,
            conversation_id=conversation_id,
        )
        f._run_id = run_id or transcript.run_id
        try:
            f.status = ChainStatus(status)
        except ValueError:  # a cursor from an older version: say nothing is reading
            f.status = ChainStatus.DETACHED
        f.started_at = f.ended_at = ended_at
        f.active_base = max(0.0, active_seconds)
        f.notice = f.warning = notice
        if f.status == ChainStatus.REQUIRES_APPROVAL and f._run_id:
            f.approval = ApprovalState(f._run_id, transcript.pending_tool_calls())
        f._settled.set()
        f._named.set()
        if server_durations and transcript.runs:
            _later(f._load_durations)
        return f

    def _load_durations(self) -> None:
        """The chain's active time from the server's run durations (approval waits excluded)."""
        if self.clock.wait(self._stop, DURATIONS_AFTER):
            return
        total = 0.0
        for rid in list(self.transcript.runs):
            try:
                run = self.backend.get_run(rid)
            except LettaNbError:
                return  # keep the cursor's figure
            seconds = run_seconds(run, self.clock.time())
            if run.get("status") not in FINAL_RUN_STATUSES or seconds is None:
                return
            total += seconds
        if total > 0 and not self._spans:
            self.active_base = total
            self._notify()

    def __repr__(self) -> str:
        where = f" conversation={self.conversation_id}" if self.conversation_id else ""
        return (
            f"<Follower agent={self.agent_id}{where} run={self.run_id} status={self.status} "
            f"seq={self.last_seq}>"
        )

    # ---- read-only state -----------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def runs(self) -> list[str]:
        return list(self.transcript.runs)

    @property
    def last_seq(self) -> int:
        rid = self._run_id
        return self.transcript.last_seq(rid) if rid else 0

    @property
    def frames(self) -> int:
        """Data frames read so far (pings excluded)."""
        return self._reader.frames

    @property
    def reconnects(self) -> int:
        """Resumes opened after a break, an EOF or a hole (each one, also after progress)."""
        return self._reader.reconnects

    @property
    def frames_per_s(self) -> float:
        if not self.started_at:
            return 0.0
        elapsed = (self.ended_at or self.clock.time()) - self.started_at
        return self.frames / elapsed if elapsed > 0 else 0.0

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last data frame (or since the read began)."""
        return max(0.0, self.clock.monotonic() - self._reader.last_data)

    @property
    def settled(self) -> bool:
        return self._settled.is_set()

    @property
    def quiescent(self) -> bool:
        """No reader can fold a frame concurrently: a transcript snapshot is consistent.

        True from the reader thread itself (listeners run there) or when no reader is alive.
        """
        t = self._thread
        return t is None or t is threading.current_thread() or not t.is_alive()

    @property
    def backoff(self) -> Backoff:
        """The reconnect policy (from `backoff_base` / `backoff_cap` / `max_reconnects`)."""
        return Backoff(self.backoff_base, self.backoff_cap, self.max_reconnects, self.clock)

    @property
    def active_seconds(self) -> float:
        """Seconds the chain's runs were being worked on, human approval waits excluded."""
        now = self.clock.monotonic()
        total = self.active_base
        for start, end in self._spans:
            assert start is not None
            total += (now if end is None else end) - start
        return max(0.0, total)

    # ---- listeners (ReadingChain) --------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        self._listeners = [*self._listeners, fn]  # copy-on-write: the reader iterates freely

    def remove_listener(self, fn: Listener) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self) -> None:
        for fn in self._listeners:
            try:  # noqa: SIM105 - plain try is cheaper per frame than suppress()
                fn(self)
            except Exception:  # a broken view must not kill the reader
                pass

    notify = _notify

    def opened(self, stream: Any) -> None:
        self._stream = stream

    def _set_status(self, status: ChainStatus, *, error: str | None = None) -> None:
        self.status = status
        if error is not None:
            self.error = error
        if status in SETTLED and status != ChainStatus.REQUIRES_APPROVAL:
            self.ended_at = self.clock.time()
        open_span = bool(self._spans) and self._spans[-1][1] is None
        if status in LIVE and not open_span:
            self._spans.append([self.clock.monotonic(), None])
        elif status in SETTLED and open_span:
            self._spans[-1][1] = self.clock.monotonic()
        self._notify()

    # ---- starting ------------------------------------------------------------------------
    def start(
        self,
        messages: list[dict[str, Any]],
        *,
        otid: str | None = None,
        background: bool = True,
        stream_tokens: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Send `messages` and follow the new run in a thread."""
        otid = otid or new_otid()
        self.background = background
        sent_at = self.clock.time()

        def opener() -> Iterator[Chunk] | ChunkStream:
            kw: dict[str, Any] = {}
            if timeout is not None:
                kw["timeout"] = timeout
            if self.conversation_id is not None:
                kw["conversation_id"] = self.conversation_id
            return self.backend.start(
                self.agent_id,
                messages,
                otid=otid,
                background=background,
                stream_tokens=stream_tokens,
                include_pings=True,
                **kw,
            )

        send = Send(
            opener,
            otid,
            sent_at,
            reattaches=self.backend.reattaches_otid,
            conversation_id=self.conversation_id,
        )
        self._launch(lambda stop: self._chain(opener, stop, send=send))

    def follow(
        self, run_id: str, *, starting_after: int = 0, batch_size: int | None = None
    ) -> None:
        """Follow an existing run from `starting_after` (exclusive) in a thread."""
        if batch_size is not None:
            self.batch_size = batch_size
        self.transcript.begin_stream(run_id, starting_after)  # a deliberate skip: no hole
        self._run_id = run_id
        bounded = starting_after > 0

        def body(stop: threading.Event) -> None:
            if bounded:  # resuming a finished run at/after its end would hang: bound it
                try:
                    run = self.backend.get_run(run_id)
                except LettaNbError as exc:
                    self._set_status(ChainStatus.ERROR, error=str(exc))
                    return
                if run.get("status") in FINAL_RUN_STATUSES:
                    self._set_status(ChainStatus.RUNNING)
                    self._finish(run_id, self._reader.read_finished(run_id, run, stop=stop))
                    return
            self._set_status(ChainStatus.RUNNING)
            self._chain(self._reader.resumer(run_id), stop)

        self._launch(body)

    def _launch(self, body: Callable[[threading.Event], None]) -> None:
        with self._lock:
            current = self._thread
            if (
                current is not None
                and current.is_alive()
                and not self._settled.is_set()
                and current is not threading.current_thread()
            ):
                raise RuntimeError("this follower is already reading")
            self._generation += 1
            generation = self._generation
            stop = self._stop = threading.Event()  # an older reader keeps its own (set) one
            self._settled.clear()
            if self._run_id is None:
                self._named.clear()
            else:
                self._named.set()
            self.started_at = self.started_at or self.clock.time()
            self.ended_at = None
            self.failure = None
            self._reader.last_data = self.clock.monotonic()
            ctx = contextvars.copy_context()
            run = partial(ctx.run, self._guard, body, generation, stop)
            self._thread = self.spawn(run, f"letta-nb-follower-{self.agent_id}")
        stall.watch(self, self.clock)

    def _guard(
        self, body: Callable[[threading.Event], None], generation: int, stop: threading.Event
    ) -> None:
        try:
            body(stop)
        except LettaNbError as exc:
            if not stop.is_set():
                self.failure = exc
                self._set_status(ChainStatus.ERROR, error=str(exc))
        except Exception as exc:  # never a traceback from a thread; say it in one line
            if not stop.is_set():
                self._set_status(ChainStatus.ERROR, error=f"{type(exc).__name__}: {exc}")
        finally:
            if self.frames >= TRIM_AFTER_FRAMES:
                _release_freed_memory()  # before settling: a waiter sees the memory returned
            with self._lock:  # atomic with _launch: never settle a newer reader's chain
                if generation == self._generation:
                    self._stream = None
                    self._settled.set()
                    self._named.set()
            self._reader.finish_leftover()  # after the end is told (its connection is kept)

    # ---- the chain -----------------------------------------------------------------------
    def _chain(
        self,
        opener: Opener,
        stop: threading.Event,
        *,
        send: Send | None = None,
        answering: ApprovalState | None = None,
    ) -> None:
        """Read runs until a terminal state; a policy may answer approvals in between."""
        while True:
            try:
                ending = self._reader.read(
                    opener, stop=stop, adopt=partial(self._adopt, answering=answering), send=send
                )
            except LettaNbError as exc:
                if answering is None or answering.state != SENDING:
                    raise
                # the answer never became a run: the request is still pending on the server
                retry = isinstance(exc, ServerUnavailable | StreamInterrupted)
                answering.failed(str(exc), retryable=retry)
                self.failure = exc
                self._run_id = answering.run_id
                status = ChainStatus.REQUIRES_APPROVAL if retry else ChainStatus.ERROR
                self._set_status(status, error=str(exc))
                return
            outcome = self._finish(self._run_id, ending)
            if outcome != ChainStatus.REQUIRES_APPROVAL or stop.is_set():
                return
            decision = self.decide()
            if decision is None:
                return
            approve, reason = decision
            state = self.approval
            assert state is not None
            try:
                state.begin(approve, reason)
            except ApprovalError:
                return  # a person answered first (answer()); their reader takes over
            opener, send, answering = self._answer_opener(state, approve, reason)

    def decide(self) -> tuple[bool, str | None] | None:
        """The policy's answer to the pending approval: (approve, reason), or None (ask a
        person). A chain restored from its cursor asks its caller to apply it."""
        policy, state = self.policy, self.approval
        if policy is None or state is None:
            return None
        if policy == "approve":
            return True, None
        if policy == "deny":
            return False, "denied automatically (policy)"
        verdict = policy(state.tool_calls) if callable(policy) else None
        if verdict is None:
            return None
        return bool(verdict), None if verdict else "denied by policy"

    def _answer_opener(
        self, state: ApprovalState, approve: bool, reason: str | None
    ) -> tuple[Opener, Send, ApprovalState]:
        otid = new_otid()
        answers = state.answers(approve, reason)

        def opener() -> Iterator[Chunk] | ChunkStream:
            if self.conversation_id is None:
                return self.backend.approve(self.agent_id, answers, otid=otid)
            return self.backend.approve(
                self.agent_id, answers, otid=otid, conversation_id=self.conversation_id
            )

        self._run_id = None
        self._named.clear()
        self.approval = state  # stays visible (with its outcome) while the new run streams
        self._set_status(ChainStatus.STARTING)
        # servers keep no otid on approval responses: a broken answer is found in the runs
        return opener, Send(opener, None, self.clock.time()), state

    def _adopt(self, rid: str, answering: ApprovalState | None) -> None:
        self._run_id = rid
        self.transcript.tracker(rid)
        if self.confirm_conversation:
            self.confirm_conversation = False
            self._confirm_conversation(rid)
        if answering is not None:
            answering.succeeded(rid)
        self._named.set()
        self._set_status(ChainStatus.RUNNING)

    def _confirm_conversation(self, rid: str) -> None:
        try:
            where = self.backend.get_run(rid).get("conversation_id")
        except LettaNbError:
            return  # keep what the chain was told
        old = self.conversation_id
        if where and old and where != old:
            self.conversation_id = where
            if self.on_moved is not None:
                with contextlib.suppress(Exception):
                    self.on_moved(old, where)

    # ---- endings -------------------------------------------------------------------------
    def _finish(self, rid: str | None, ending: Ending) -> ChainStatus:
        if ending.status == ChainStatus.DETACHED:
            return ChainStatus.DETACHED  # detach() publishes it
        self.notice = ending.notice
        self.warning = ending.notice
        if ending.error is not None:
            self.error = ending.error
        if (
            ending.stop_reason == StopReason.REQUIRES_APPROVAL
            and ending.status == ChainStatus.COMPLETED
            and rid is not None
        ):
            self.approval = ApprovalState(rid, self._pending_calls())
            self._set_status(ChainStatus.REQUIRES_APPROVAL)
            return ChainStatus.REQUIRES_APPROVAL
        self._set_status(ending.status)
        return ending.status

    def _pending_calls(self) -> list[dict[str, Any]]:
        calls = self.transcript.pending_tool_calls()
        if calls and all(_complete_args(c.get("arguments")) for c in calls):
            return calls
        try:
            full = self.backend.pending_approval(self.agent_id, self.conversation_id)
        except LettaNbError:
            full = []
        return full or calls

    # ---- control -------------------------------------------------------------------------
    def answer(self, approve: bool, reason: str | None = None) -> None:
        """Answer the pending approval (once); the answer's new run is followed here."""
        state = self.approval
        if state is None or self.status != ChainStatus.REQUIRES_APPROVAL:
            raise ApprovalError(f"run {self.run_id} has no pending approval (status {self.status})")
        state.begin(approve, reason)
        # The reader publishes requires_approval just before it exits (or asks its policy,
        # which now loses the claim): let it finish instead of failing "already reading".
        self._join(self.join_timeout)
        opener, send, answering = self._answer_opener(state, approve, reason)
        try:
            self._launch(lambda stop: self._chain(opener, stop, send=send, answering=answering))
        except RuntimeError:
            state.failed("the previous reader did not finish", retryable=True)
            self._run_id = state.run_id
            self._set_status(ChainStatus.REQUIRES_APPROVAL)
            raise

    def cancel(self) -> str:
        """Cancel the run on the server; the reader then sees `stop_reason: cancelled`."""
        self.clock.wait(self._named, 5.0)  # a starting run: wait (bounded) for its id
        rid = self._run_id
        if rid is None:
            return str(self.status)
        if self.status in FINAL_RUN_STATUSES or self.status == ChainStatus.INCOMPLETE:
            return str(self.status)  # over on the server: a cancel would change nothing
        result = self.backend.cancel(self.agent_id, [rid]).get(rid, RunStatus.CANCELLED)
        if self._settled.is_set() and result == RunStatus.CANCELLED:
            if self.approval is not None and self.approval.open:
                self.approval.failed("the run was cancelled", retryable=False)
            self._set_status(ChainStatus.CANCELLED)
        return result

    def detach(self) -> None:
        """Stop reading locally; the run goes on and the cursor stays resumable.

        Waits (bounded) for the reader to stop, so the "detached" listeners see a transcript
        no reader is still folding into (the cursor snapshot is consistent); the chain then
        says where it stopped (`last_seq`) until it is revived (`resume`).
        """
        self._stop.set()
        stream = self._stream
        if stream is not None and hasattr(stream, "close"):
            stream.close()
        self._join(self.detach_join_timeout)
        if self.status not in SETTLED:
            self._set_status(ChainStatus.DETACHED)
        self._settled.set()
        self._named.set()

    def resume(self) -> bool:
        """Continue a detached or errored chain from its cursor (no new run); False if not.

        Nothing is re-read or skipped: the reader resumes the newest run after the
        transcript's own seq. Reading, finished and `--no-background` chains are left alone,
        and so is an approval answer whose run was never named (it may or may not exist).
        """
        if self.status not in (ChainStatus.DETACHED, ChainStatus.ERROR) or not self.background:
            return False
        state = self.approval
        if self._run_id is None and state is not None and state.state == SENDING:
            return False
        rid = self._run_id or self.transcript.run_id
        if rid is None:
            return False
        self._join(self.join_timeout)
        self.error = None
        self.warning = self.notice
        self._stall_warned = False
        self.follow(rid, starting_after=self.transcript.last_seq(rid))
        return True

    def drop_connection(self) -> bool:
        """Close the live connection as a network cut would; the reader resumes by itself.

        For demos and tests of the reconnect path (`reconnects` counts it). False when no
        connection is open right now.
        """
        stream = self._stream
        if stream is None or self._settled.is_set() or not hasattr(stream, "close"):
            return False
        stream.close()
        return True

    def _join(self, timeout: float) -> None:
        """Wait (bounded) for the reader thread to end, unless called from it."""
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout)

    def named(self, timeout: float = 10.0) -> str | None:
        """Wait (bounded) until the chain's current run has an id; returns it (None if not
        within `timeout`, or when nothing reads)."""
        self.clock.wait(self._named, max(0.0, min(timeout, WAIT_BOUND)))
        return self._run_id

    def wait(self, timeout: float | None = None) -> str:
        """Block until the chain settles (terminal, approval, detached, error) or `timeout`.

        `None` (or infinity) still has a bound (one hour): a notebook cell never hangs forever.
        """
        if timeout is not None and math.isnan(timeout):
            raise ConfigurationError("timeout must be a number of seconds, not nan")
        bound = WAIT_BOUND if timeout is None or math.isinf(timeout) else max(0.0, timeout)
        self.clock.wait(self._settled, min(bound, threading.TIMEOUT_MAX))
        return str(self.status)

    # ---- stall watchdog (`stall.py`: one thread for every chain on the same clock) ---------
    @property
    def stall_interval(self) -> float:
        return max(0.01, min(1.0, self.stall_after / 4))

    def stall_check(self) -> bool:
        """Warn once after `stall_after` seconds without data; False once settled."""
        if self._settled.is_set():
            return False
        if self._stall_warned and self.warning is self.notice:
            self._stall_warned = False  # data flowed again (the reader cleared it)
        if self.status != ChainStatus.RUNNING or self._stall_warned:
            return True
        idle = self.clock.monotonic() - self._reader.last_data
        if idle >= self.stall_after:
            self._stall_warned = True
            self.warning = STALL_WARNING.format(idle)
            self._notify()
        return True


def run_seconds(run: dict[str, Any], now: float) -> float | None:
    """How long the server has worked on `run`: its durations once it is over, the time since
    it was created while it is live (epoch `now`); None when the server does not say."""
    if run.get("status") in FINAL_RUN_STATUSES:
        ns = run.get("total_duration_ns")
        if isinstance(ns, int | float) and ns > 0:
            return ns / 1e9
        start, end = epoch(run.get("created_at")), epoch(run.get("completed_at"))
        return end - start if start and end and end >= start else None
    start = epoch(run.get("created_at"))
    return max(0.0, now - start) if start else None


def new_thread(run: Callable[[], None], name: str) -> threading.Thread:
    """The default `Spawn`: `run` on a daemon thread of its own."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


_tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()


def _later(task: Callable[[], None]) -> None:
    """Run `task` on the one background worker (a daemon thread, started on first use)."""
    global _worker
    _tasks.put(task)
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, daemon=True, name="letta-nb-background")
            _worker.start()


def _work() -> None:
    while True:
        task = _tasks.get()
        with contextlib.suppress(Exception):  # a background refresh never stops the worker
            task()


#: Runs this long leave megabytes of freed per-frame garbage in the reader thread's heap.
TRIM_AFTER_FRAMES = 20_000
_libc: Any = None


def _release_freed_memory() -> None:
    """Give the freed heap of a long stream back to the OS (glibc only; a no-op elsewhere).

    Millions of short-lived frames are parsed in the reader thread's malloc arena; glibc keeps
    those pages after they are freed, so the kernel's RSS would stay at its peak long after the
    transcript is all that is left.
    """
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        _libc = False


def _complete_args(raw: Any) -> bool:
    if not raw:
        return False
    try:
        json.loads(raw)
    except (TypeError, ValueError):
        return False
    return True


if TYPE_CHECKING:
    from .._protocols import RunChain
    from .reader import ReadingChain

    def _conforms(f: Follower) -> tuple[RunChain, ReadingChain, stall.Watched]:
        """mypy checks here that the follower is what front ends and its reader rely on."""
        return f, f, f
