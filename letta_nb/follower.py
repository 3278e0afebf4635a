"""Follow one run chain in a worker thread: dedupe, reconnect, approvals, cancel, detach.

The reader never prints: front ends draw from listeners (throttled on their side). Per-frame work
is a seq check, a transcript fold and the listener calls, nothing else. The resume cursor is the
transcript's per-run seq, which includes the hidden seqs of stop_reason/usage, so a resume never
asks for a frame twice and never asks past the end (the real server then hangs forever).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

from .core.approval import SENDING, ApprovalState
from .core.chunks import Chunk
from .core.errors import (
    ApprovalError,
    LettaNbError,
    ServerUnavailable,
    StreamInterrupted,
    StreamTimeout,
)
from .core.status import LIVE, SETTLED
from .core.transcript import Transcript
from .protocol import FINAL_RUN_STATUSES, status_for_stop_reason
from .protocol import MessageType as MT

Policy = Callable[[list[dict[str, Any]]], "bool | None"]
STALL_WARNING = "no data for {:.0f} s: the run may be stalled (Cancel stops it server-side)"


class _RunEnded(Exception):
    """Internal: the current run reached a terminal state."""


class Follower:
    """One run chain (a send, then each approval's new run), read in a daemon thread."""

    backoff_base = 0.1
    backoff_cap = 2.0
    tail_timeout = 5.0  # bound on the one resume for a tail after stop_reason + EOF
    eof_checks = 3  # EOFs without progress before asking the server for the status
    recover_delays = (0.2, 0.5, 1.0)
    join_timeout = 5.0  # bound on waiting for a stopping/finishing reader thread
    detach_join_timeout = 1.0  # detach returns promptly even if a read cannot be interrupted

    def __init__(
        self,
        backend: Any,
        *,
        agent_id: str,
        transcript: Transcript | None = None,
        stall_after: float = 60.0,
        max_reconnects: int = 20,
        policy: Policy | None = None,
    ) -> None:
        self.backend = backend
        self.agent_id = agent_id
        self.transcript = transcript if transcript is not None else Transcript()
        self.stall_after = stall_after
        self.max_reconnects = max_reconnects
        self.policy = policy
        self.status = "starting"
        self.approval: ApprovalState | None = None
        self.warning: str | None = None
        self.error: str | None = None
        self.frames = 0
        #: Resumes opened after a break or an EOF (each one, also after progress).
        self.reconnects = 0
        #: Frames per resume page (`Backend.resume(batch_size=...)`); None: the server's.
        self.batch_size: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        #: Monotonic (start, end) of each stretch this chain was being worked on; a human's
        #: wait for an approval lies between two stretches. A restored chain's total comes
        #: from the server (`active_base`).
        self._spans: list[list[float | None]] = []
        self.active_base = 0.0
        self.background = True
        self._run_id: str | None = self.transcript.run_id
        self._listeners: list[Callable[[Follower], Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()  # the newest reader's; each reader keeps its own
        self._local = threading.local()  # .stop: the calling reader thread's stop event
        self._settled = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._stream: Any = None
        self._otid: str | None = None  # the current send's otid (finds its run after a cut)
        self._last_data = time.monotonic()
        self._stall_warned = False

    def __repr__(self) -> str:
        return (
            f"<Follower agent={self.agent_id} run={self.run_id} status={self.status} "
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
    def frames_per_s(self) -> float:
        if not self.started_at:
            return 0.0
        elapsed = (self.ended_at or time.time()) - self.started_at
        return self.frames / elapsed if elapsed > 0 else 0.0

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
    def _halt(self) -> threading.Event:
        """The calling reader's stop event: a newer launch never un-stops an older reader."""
        return getattr(self._local, "stop", None) or self._stop

    # ---- listeners -----------------------------------------------------------------------
    def add_listener(self, fn: Callable[[Follower], Any]) -> None:
        self._listeners = [*self._listeners, fn]  # copy-on-write: the reader iterates freely

    def remove_listener(self, fn: Callable[[Follower], Any]) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self) -> None:
        for fn in self._listeners:
            try:  # noqa: SIM105 - plain try is cheaper per frame than suppress()
                fn(self)
            except Exception:  # a broken view must not kill the reader
                pass

    @property
    def active_seconds(self) -> float:
        """Seconds the chain's runs were being worked on here, human approval waits excluded."""
        now = time.monotonic()
        total = self.active_base
        for start, end in self._spans:
            assert start is not None
            total += (now if end is None else end) - start
        return max(0.0, total)

    def _set_status(self, status: str, *, error: str | None = None) -> None:
        self.status = status
        if error is not None:
            self.error = error
        if status in SETTLED and status != "requires_approval":
            self.ended_at = time.time()
        open_span = bool(self._spans) and self._spans[-1][1] is None
        if status in LIVE and not open_span:
            self._spans.append([time.monotonic(), None])
        elif status in SETTLED and open_span:
            self._spans[-1][1] = time.monotonic()
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
        from .backend import new_otid  # lazy: keep `follower` importable without the SDK

        otid = otid or new_otid()
        self._otid = otid
        self.background = background
        sent_at = time.time()

        def opener() -> Iterator[Chunk]:
            kw: dict[str, Any] = {
                "otid": otid,
                "background": background,
                "stream_tokens": stream_tokens,
                "include_pings": True,
            }
            if timeout is not None:
                kw["timeout"] = timeout
            return self.backend.start(self.agent_id, messages, **kw)

        self._launch(lambda: self._chain(opener, sent_at=sent_at, resend=opener))

    def follow(
        self, run_id: str, *, starting_after: int = 0, batch_size: int | None = None
    ) -> None:
        """Follow an existing run from `starting_after` (exclusive) in a thread."""
        if batch_size is not None:
            self.batch_size = batch_size
        tracker = self.transcript.tracker(run_id)
        tracker.last_seq = max(tracker.last_seq, starting_after)
        self._run_id = run_id
        bounded = starting_after > 0

        def body() -> None:
            if bounded:  # resuming a finished run at/after its end would hang: bound it
                try:
                    run = self.backend.get_run(run_id)
                except LettaNbError as exc:
                    self._set_status("error", error=str(exc))
                    return
                if run.get("status") in FINAL_RUN_STATUSES:
                    self._set_status("running")
                    self._read_tail(run_id, final=run)
                    return
            self._set_status("running")
            self._chain(self._resumer(run_id))

        self._launch(body)

    def _launch(self, body: Callable[[], None]) -> None:
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
            self.started_at = self.started_at or time.time()
            self.ended_at = None
            self._last_data = time.monotonic()
            ctx = contextvars.copy_context()
            self._thread = threading.Thread(
                target=ctx.run,
                args=(self._guard, body, generation, stop),
                name=f"letta-nb-follower-{self.agent_id}",
                daemon=True,
            )
            self._thread.start()
        self._start_watchdog()

    def _guard(self, body: Callable[[], None], generation: int, stop: threading.Event) -> None:
        self._local.stop = stop
        try:
            body()
        except LettaNbError as exc:
            if not stop.is_set():
                self._set_status("error", error=str(exc))
        except Exception as exc:  # never a traceback from a thread; say it in one line
            if not stop.is_set():
                self._set_status("error", error=f"{type(exc).__name__}: {exc}")
        finally:
            if self.frames >= TRIM_AFTER_FRAMES:
                _release_freed_memory()  # before settling: a waiter sees the memory returned
            with self._lock:  # atomic with _launch: never settle a newer reader's chain
                if generation == self._generation:
                    self._stream = None
                    self._settled.set()

    # ---- the chain -----------------------------------------------------------------------
    def _chain(
        self,
        opener: Callable[[], Iterator[Chunk]],
        *,
        sent_at: float | None = None,
        resend: Callable[[], Iterator[Chunk]] | None = None,
        answering: ApprovalState | None = None,
    ) -> None:
        """Read runs until a terminal state; a policy may answer approvals in between."""
        while True:
            try:
                outcome = self._read_run(
                    opener, sent_at=sent_at, resend=resend, answering=answering
                )
            except LettaNbError as exc:
                if answering is None or answering.state != SENDING:
                    raise
                # the answer never became a run: the request is still pending on the server
                retry = isinstance(exc, ServerUnavailable | StreamInterrupted)
                answering.failed(str(exc), retryable=retry)
                self._run_id = answering.run_id
                self._set_status("requires_approval" if retry else "error", error=str(exc))
                return
            if outcome != "requires_approval" or self._halt.is_set():
                return
            decision = self._decide()
            if decision is None:
                return
            approve, reason = decision
            state = self.approval
            assert state is not None
            try:
                state.begin(approve, reason)
            except ApprovalError:
                return  # a person answered first (answer()); their reader takes over

            opener, sent_at, resend, answering = self._answer_opener(state, approve, reason)

    def _decide(self) -> tuple[bool, str | None] | None:
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

    def _answer_opener(self, state: ApprovalState, approve: bool, reason: str | None) -> tuple:
        from .backend import new_otid

        otid = new_otid()
        self._otid = None  # servers keep no otid on approval responses: nothing to match
        answers = state.answers(approve, reason)

        def opener() -> Iterator[Chunk]:
            return self.backend.approve(self.agent_id, answers, otid=otid)

        self._run_id = None
        self.approval = state  # stays visible (with its outcome) while the new run streams
        self._set_status("starting")
        return opener, time.time(), opener, state

    def _read_run(
        self,
        opener: Callable[[], Iterator[Chunk]],
        *,
        sent_at: float | None,
        resend: Callable[[], Iterator[Chunk]] | None,
        answering: ApprovalState | None,
    ) -> str:
        """Read one run to its end, reconnecting as needed; returns the settled status."""
        tr = self.transcript
        apply = tr.apply
        stop = self._halt
        failures = 0
        idle_eofs = 0
        stop_reason: str | None = None
        while True:
            if stop.is_set():
                return "detached"
            progressed = False
            rid = self._run_id
            stream = None
            try:
                stream = opener()
                self._stream = stream
                for chunk in stream:
                    if rid is None:
                        rid = chunk.run_id
                        if rid is None:
                            continue
                        self._adopt(rid, answering)
                    if stop.is_set():
                        return "detached"
                    acc = apply(chunk, rid)
                    if acc is None:
                        continue
                    kind = acc.message_type
                    if kind == MT.PING:
                        continue
                    progressed = True
                    self.frames += 1
                    self._last_data = time.monotonic()
                    if self.warning is not None:
                        self.warning = None
                        self._stall_warned = False
                    if kind == MT.STOP_REASON:
                        stop_reason = str(acc.data.get("stop_reason"))
                        if stop_reason == "cancelled":
                            return self._finish(rid, stop_reason)
                    elif kind == MT.USAGE:
                        if stop_reason is not None:
                            return self._finish(rid, stop_reason)
                    elif kind == MT.ERROR:
                        return self._finish(rid, stop_reason or "error", error=acc)
                    self._notify()
            except StreamInterrupted as exc:
                if stop.is_set():
                    return "detached"
                if not self.background:
                    raise StreamInterrupted(
                        f"{exc} — a --no-background run cannot be resumed; its run "
                        f"{rid or '(unknown)'} may still be working on the server"
                    ) from None
                failures = 0 if progressed else failures + 1
                rid = self._run_id
                if rid is None:
                    opener = self._recover(sent_at, resend, failures, answering)
                    self._reconnecting(str(exc), failures)
                    continue
                self._backoff(failures, str(exc))
                self._reconnecting(str(exc), failures)
                opener = self._resumer(rid)
                continue
            except ServerUnavailable as exc:
                if stop.is_set():
                    return "detached"
                if self._run_id is None:
                    raise  # the send itself failed: re-sending could start a second run
                failures = 0 if progressed else failures + 1
                self._backoff(failures, str(exc))
                self._reconnecting(str(exc), failures)
                opener = self._resumer(self._run_id)
                continue
            finally:
                if self._stream is stream:
                    self._stream = None
                _close(stream)
            # clean EOF
            if stop.is_set():
                return "detached"
            rid = self._run_id
            if rid is None:
                raise StreamInterrupted("the server closed the stream before naming its run")
            if stop_reason is not None:
                self._reconnecting("the stream ended after the stop reason", 0)
                return self._read_tail(rid, stop_reason=stop_reason)
            if not self.background:
                raise StreamInterrupted(
                    f"the stream of run {rid} ended without a stop reason "
                    "(a --no-background run cannot be resumed)"
                )
            idle_eofs = 0 if progressed else idle_eofs + 1
            if idle_eofs >= self.eof_checks:
                run = self.backend.get_run(rid)
                if run.get("status") in FINAL_RUN_STATUSES:
                    return self._finish(rid, run.get("stop_reason"), status=run["status"])
                if idle_eofs >= self.max_reconnects:
                    raise StreamInterrupted(f"the stream of run {rid} keeps ending without data")
            self._backoff(idle_eofs, "the stream ended early")
            self._reconnecting("the stream ended early", idle_eofs)
            opener = self._resumer(rid)

    def _resume_kw(self, **kw: Any) -> dict[str, Any]:
        if self.batch_size is not None:
            kw["batch_size"] = self.batch_size
        return kw

    def _resumer(self, rid: str) -> Callable[[], Iterator[Chunk]]:
        def opener() -> Iterator[Chunk]:
            after = self.transcript.last_seq(rid)
            self.transcript.begin_stream(rid, after)
            return self.backend.resume(rid, after, **self._resume_kw())

        return opener

    def _reconnecting(self, why: str, attempt: int) -> None:
        """Count a resume opened after a break/EOF and say so until data flows again."""
        self.reconnects += 1
        rid = self._run_id
        where = f"run {rid} after seq {self.last_seq}" if rid else "the send"
        tries = f", attempt {attempt}/{self.max_reconnects}" if attempt > 0 else ""
        self.warning = f"reconnecting to {where} ({why}{tries}; reconnect #{self.reconnects})"
        self._notify()

    def _adopt(self, rid: str, answering: ApprovalState | None) -> None:
        self._run_id = rid
        self.transcript.tracker(rid)
        if answering is not None:
            answering.succeeded(rid)
        self._set_status("running")

    def _backoff(self, attempt: int, why: str) -> None:
        if attempt > self.max_reconnects:
            rid = self._run_id
            raise StreamInterrupted(
                f"gave up after {self.max_reconnects} reconnects ({why}); run {rid} can be "
                f"resumed from seq {self.last_seq} (re-run the cell or lnb.attach)"
            )
        if attempt <= 0:
            return
        self.warning = f"reconnecting ({why}); attempt {attempt}/{self.max_reconnects}"
        self._notify()
        delay = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        self._halt.wait(delay * (0.5 + random.random() / 2))

    def _recover(
        self,
        sent_at: float | None,
        resend: Callable[[], Iterator[Chunk]] | None,
        attempt: int,
        answering: ApprovalState | None,
    ) -> Callable[[], Iterator[Chunk]]:
        """The send broke before any frame: find its run, or re-send with the same otid.

        The embedded server re-attaches a re-sent message otid to its run (not an approval's);
        anywhere else the agent's newest runs since the send are the candidates.
        """
        if resend is None or sent_at is None:
            raise StreamInterrupted("the stream broke before its run was known")
        if answering is None and getattr(self.backend, "reattaches_otid", False):
            self._backoff(attempt, "the send broke before the first frame")
            return resend
        known = set(self.transcript.runs)
        for delay in self.recover_delays:
            if self._halt.wait(delay):
                break
            try:
                runs = self.backend.list_runs(agent_id=self.agent_id, limit=10, order="desc")
            except (StreamInterrupted, ServerUnavailable):
                continue
            fresh = [
                r
                for r in runs
                if r.get("id") not in known and _epoch(r.get("created_at")) >= sent_at - 5.0
            ]
            rid = self._own_run(fresh) if fresh else None
            if rid is not None:
                self._adopt(rid, answering)
                return self._resumer(rid)
        self._backoff(attempt, "the send broke before the first frame")
        return resend

    def _own_run(self, fresh: list[dict[str, Any]]) -> str | None:
        """The oldest candidate whose messages carry this send's otid.

        A run sent just before ours (the previous cell) is a candidate too: without the otid
        check it would be adopted and shown as this send's answer. Runs whose messages carry no
        otid at all (a server that keeps none or lists none, or messages not written yet) stay
        eligible.
        """
        otid = self._otid
        if otid is None:
            return fresh[-1]["id"]  # the oldest new one: ours was sent first
        unknown = None
        for run in reversed(fresh):
            try:
                messages = self.backend.run_messages(run["id"])
            except LettaNbError:
                messages = []  # no message listing: the run stays eligible
            otids = {m.get("otid") for m in messages} - {None}
            if otid in otids:
                return run["id"]
            if not otids and unknown is None:
                unknown = run["id"]
        return unknown

    # ---- endings -------------------------------------------------------------------------
    def _finish(
        self,
        rid: str,
        stop_reason: str | None,
        *,
        error: Chunk | None = None,
        status: str | None = None,
    ) -> str:
        if status is None:
            status = status_for_stop_reason(stop_reason) if stop_reason else "failed"
            if error is not None and status == "completed":
                status = "failed"
        self.warning = None
        if error is not None:
            data = error.data
            self.error = " ".join(str(data.get("message") or "the run failed").split())
        if stop_reason == "requires_approval" and status == "completed":
            calls = self._pending_calls()
            self.approval = ApprovalState(rid, calls)
            self._set_status("requires_approval")
            return "requires_approval"
        self._set_status(status)
        return status

    def _pending_calls(self) -> list[dict[str, Any]]:
        calls = self.transcript.pending_tool_calls()
        if calls and all(_complete_args(c.get("arguments")) for c in calls):
            return calls
        try:
            full = self.backend.pending_approval(self.agent_id)
        except LettaNbError:
            full = []
        return full or calls

    def _read_tail(
        self, rid: str, *, stop_reason: str | None = None, final: dict[str, Any] | None = None
    ) -> str:
        """Bounded resume for what follows a stop_reason (usage, error), or of a finished run.

        Every read has a short timeout and an idle deadline: past the end the real server
        sends only keepalives forever. At most three reads (a proxy may cut the tail too).
        """
        error: Chunk | None = None
        done = False
        stop = self._halt
        timeouts = failures = empty = 0
        while not done and not stop.is_set():
            if timeouts or failures or empty:
                self.reconnects += 1  # a further read of the tail after a break/EOF
            deadline = time.monotonic() + self.tail_timeout
            stream = None
            progressed = False
            try:
                after = self.transcript.last_seq(rid)
                self.transcript.begin_stream(rid, after)
                stream = self.backend.resume(
                    rid, after, **self._resume_kw(timeout=self.tail_timeout)
                )
                self._stream = stream
                for chunk in stream:
                    acc = self.transcript.apply(chunk, rid)
                    if acc is not None and acc.message_type != MT.PING:
                        self.frames += 1
                        progressed = True
                        deadline = time.monotonic() + self.tail_timeout
                        kind = acc.message_type
                        if kind == MT.STOP_REASON:
                            stop_reason = str(acc.data.get("stop_reason"))
                            done = stop_reason == "cancelled"
                        elif kind == MT.ERROR:
                            error, done = acc, True
                        elif kind == MT.USAGE and stop_reason is not None:
                            done = True
                        if done:
                            break
                        self._notify()
                    if stop.is_set() or time.monotonic() > deadline:
                        done = True  # only keepalives: we are at the end
                        break
            except StreamTimeout:
                timeouts += 1
                done = timeouts >= 2  # silence means nothing is stored after the cursor
            except (StreamInterrupted, ServerUnavailable) as exc:
                failures = 0 if progressed else failures + 1
                self._backoff(failures, str(exc))
            finally:
                if self._stream is stream:
                    self._stream = None
                _close(stream)
            if not done and not progressed and stream is not None:
                empty += 1  # a finished run resumed at its last seq sends only [DONE]
                if final is not None and empty >= self.eof_checks:
                    break
                failures += 1
                self._backoff(failures, "the stream ended early")
        if stop.is_set():
            return "detached"
        if stop_reason is None and final is not None:
            stop_reason = final.get("stop_reason")
        status = final.get("status") if final is not None and stop_reason is None else None
        return self._finish(rid, stop_reason, error=error, status=status)

    # ---- control -------------------------------------------------------------------------
    def answer(self, approve: bool, reason: str | None = None) -> None:
        """Answer the pending approval (once); the answer's new run is followed here."""
        state = self.approval
        if state is None or self.status != "requires_approval":
            raise ApprovalError(f"run {self.run_id} has no pending approval (status {self.status})")
        state.begin(approve, reason)
        # The reader publishes requires_approval just before it exits (or asks its policy,
        # which now loses the claim): let it finish instead of failing "already reading".
        self._join(self.join_timeout)
        opener, sent_at, resend, answering = self._answer_opener(state, approve, reason)
        try:
            self._launch(
                lambda: self._chain(opener, sent_at=sent_at, resend=resend, answering=answering)
            )
        except RuntimeError:
            state.failed("the previous reader did not finish", retryable=True)
            self._run_id = state.run_id
            self._set_status("requires_approval")
            raise

    def cancel(self) -> str:
        """Cancel the run on the server; the reader then sees `stop_reason: cancelled`."""
        deadline = time.monotonic() + 5.0
        while self._run_id is None and not self._settled.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        rid = self._run_id
        if rid is None:
            return self.status
        if self.status in FINAL_RUN_STATUSES:
            return self.status
        result = self.backend.cancel(self.agent_id, [rid]).get(rid, "cancelled")
        if self._settled.is_set() and result == "cancelled":
            if self.approval is not None and self.approval.open:
                self.approval.failed("the run was cancelled", retryable=False)
            self._set_status("cancelled")
        return result

    def detach(self) -> None:
        """Stop reading locally; the run goes on and the cursor stays resumable.

        Waits (bounded) for the reader to stop, so the "detached" listeners see a transcript
        no reader is still folding into (the cursor snapshot is consistent).
        """
        self._stop.set()
        stream = self._stream
        if stream is not None and hasattr(stream, "close"):
            stream.close()
        self._join(self.detach_join_timeout)
        if self.status not in SETTLED:
            self._set_status("detached")
        self._settled.set()

    def resume(self) -> bool:
        """Continue a detached or errored chain from its cursor (no new run); False if not.

        Nothing is re-read or skipped: the reader resumes the newest run after the
        transcript's own seq. Reading, finished and `--no-background` chains are left alone,
        and so is an approval answer whose run was never named (it may or may not exist).
        """
        if self.status not in ("detached", "error") or not self.background:
            return False
        state = self.approval
        if self._run_id is None and state is not None and state.state == SENDING:
            return False
        rid = self._run_id or self.transcript.run_id
        if rid is None:
            return False
        self._join(self.join_timeout)
        self.error = None
        self.warning = None
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

    def wait(self, timeout: float | None = None) -> str:
        """Block until the chain settles (terminal, approval, detached, error) or `timeout`.

        `None` still has a bound (one hour): a notebook cell never hangs forever.
        """
        self._settled.wait(3600.0 if timeout is None else max(0.0, timeout))
        return self.status

    # ---- stall watchdog ------------------------------------------------------------------
    def _start_watchdog(self) -> None:
        ctx = contextvars.copy_context()
        threading.Thread(
            target=ctx.run, args=(self._watch,), daemon=True, name="letta-nb-stall-watch"
        ).start()

    def _watch(self) -> None:
        interval = max(0.01, min(1.0, self.stall_after / 4))
        while not self._settled.wait(interval):
            if self.status != "running" or self._stall_warned:
                continue
            idle = time.monotonic() - self._last_data
            if idle >= self.stall_after:
                self._stall_warned = True
                self.warning = STALL_WARNING.format(idle)
                self._notify()


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


def _close(stream: Any) -> None:
    """Close a stream's generator from its own thread (runs its cleanup now, not at GC)."""
    gen = getattr(stream, "_gen", stream)
    close = getattr(gen, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError, LettaNbError):
            close()


def _complete_args(raw: Any) -> bool:
    if not raw:
        return False
    try:
        json.loads(raw)
    except (TypeError, ValueError):
        return False
    return True


def _epoch(value: Any) -> float:
    """A Run's created_at (ISO, maybe without zone: the real server mixes both) → epoch s."""
    from datetime import datetime

    if not value:
        return 0.0
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
