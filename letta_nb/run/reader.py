"""Read one run of a chain to its end, in the caller's thread.

The run is over when the end-of-run rule (`ending.RunEnd`) says so; a stream that ends right
after the stop reason gets one bounded tail read (`replay`). A run is complete only
if its seqs ran from 1 without a hole: a hole is re-read from the last contiguous seq, and if
the server sends it again the run is reported `incomplete` (or the server's `failed` /
`cancelled`), never `completed`. Likewise a run the server calls finished whose stream stops
before its end. The reader starts no thread and keeps no listeners: its chain (the `Follower`)
does, and is told what happens through `ReadingChain`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core.chunks import Chunk
from ..core.errors import (
    ConversationBusy,
    LettaNbError,
    NotFound,
    SeqGap,
    ServerUnavailable,
    StreamInterrupted,
    Unreachable,
)
from ..core.status import ChainStatus
from ..protocol import FINAL_RUN_STATUSES, RunStatus
from ..protocol import MessageType as MT
from .ending import CONTROL, DETACHED, Ending, RunEnd
from .reconnect import Backoff, find_sent_run
from .replay import close, replay

if TYPE_CHECKING:
    from .._protocols import ChunkStream, LettaBackend
    from ..core.clock import Clock
    from ..core.transcript import Transcript

Opener = Callable[[], "Iterator[Chunk] | ChunkStream"]


#: Times a send that reached nobody (connection refused) is sent again: enough for a server
#: relaunched by the backend to answer.
SEND_RETRIES = 3


@dataclass(frozen=True)
class Send:
    """A send whose run is not named yet: how to find that run again, or send it again."""

    resend: Opener
    #: The otid on the send's messages (None for approval answers: servers keep none).
    otid: str | None
    #: `clock.time()` of the send: runs created well before it are not its run.
    sent_at: float
    #: The server re-attaches a re-sent otid to its run (the embedded server): re-send.
    reattaches: bool = False
    #: The conversation it was sent to: a broken send is resumed there by its otid (or sent
    #: again with it: conversations re-attach a re-sent otid on every server).
    conversation_id: str | None = None


BUSY_NOTICE = (
    "the conversation was busy with run {run}: showing that run; this message was not sent "
    "(send it again once that run is over)"
)


class ReadingChain(Protocol):
    """What the reader needs of the chain it reads for (the `Follower`)."""

    backend: LettaBackend
    agent_id: str
    transcript: Transcript
    clock: Clock
    batch_size: int | None
    background: bool
    warning: str | None
    #: The lasting warning progress must not clear (None: none).
    notice: str | None
    tail_timeout: float
    #: The run this chain follows because the conversation was busy with it (its own
    #: message was not sent); None for a chain that follows its own send.
    busy_run: str | None
    eof_checks: int
    max_reconnects: int
    #: Waits before each lookup of a broken send's run in the agent's runs.
    recover_delays: tuple[float, ...]

    @property
    def run_id(self) -> str | None: ...

    @property
    def backoff(self) -> Backoff: ...

    def notify(self) -> None: ...

    def opened(self, stream: Any) -> None:
        """The connection now open (None: none), for detach / drop_connection to close."""
        ...


class RunReader:
    """Reads runs for one chain: counts frames and reconnects, says what it is doing."""

    def __init__(self, chain: ReadingChain) -> None:
        self.chain = chain
        #: Data frames read (pings excluded), over the chain's life.
        self.frames = 0
        #: Connections opened after a break, an early end or a hole (each one counted).
        self.reconnects = 0
        #: `clock.monotonic()` of the last data frame (the stall watchdog reads it).
        self.last_data = chain.clock.monotonic()
        #: The stream of a run that ended by the end rule, whose `[DONE]` is still unread
        #: (`finish_leftover`: read to its end, its connection is kept for the next request).
        self.leftover: Any = None

    # ---- the live read ---------------------------------------------------------------------
    def read(
        self,
        opener: Opener,
        *,
        stop: threading.Event,
        adopt: Callable[[str], None],
        send: Send | None = None,
    ) -> Ending:
        """Read one run to its end, reconnecting as needed (bounded).

        `opener` opens the first connection (a send, or a resume); `adopt(run_id)` is called
        once the run is named. A `send` that breaks before naming its run is found again by
        its otid, or sent again where that is safe (`Send`).
        """
        chain = self.chain
        self.finish_leftover(read=False)  # (a policy's answer comes right after its request)
        tr = chain.transcript
        apply = tr.apply
        notify = chain.notify
        now = chain.clock.monotonic
        end = RunEnd()
        failures = idle_eofs = refused = 0
        resent = False  # the open connection is a recovery of `send` (a re-send, by otid)
        regaps: set[int] = set()
        rid = chain.run_id
        origin = tr.last_seq(rid) if rid else 0
        while True:
            if stop.is_set():
                return DETACHED
            progressed = False
            gap = False
            rid = chain.run_id
            stream = None
            try:
                stream = opener()
                chain.opened(stream)
                for chunk in stream:
                    if rid is None:
                        rid = chunk.run_id
                        if rid is None:
                            continue
                        adopt(rid)
                    if stop.is_set():
                        return DETACHED
                    try:
                        acc = apply(chunk, rid)
                    except SeqGap as hole:
                        if hole.after not in regaps:
                            regaps.add(hole.after)  # read again from the last contiguous seq
                            gap = True
                            break
                        tr.skip_hole(rid, hole.seq)  # the same hole again: the server lacks it
                        chain.notice = _hole_notice(rid, tr.holes(rid))
                        acc = apply(chunk, rid)
                    if acc is None:
                        continue
                    kind = acc.message_type
                    if kind == MT.PING:
                        continue
                    progressed = True
                    self.frames += 1
                    self.last_data = now()
                    if chain.warning is not chain.notice:
                        chain.warning = chain.notice
                    if kind in CONTROL and end.see(acc):
                        self.leftover, stream = stream, None  # its [DONE]: read once it is told
                        return self._ended(rid, end)
                    notify()
            except ConversationBusy as busy:
                if stop.is_set():
                    return DETACHED
                if chain.run_id is not None or send is None or send.otid is None:
                    raise  # an approval's answer, or a resume: not a send to attach
                holder = busy.run_id
                if not (resent and self._sent_by(holder, send.otid)):
                    chain.busy_run = holder  # someone else's run: follow it, say so
                    chain.notice = chain.warning = BUSY_NOTICE.format(run=holder)
                adopt(holder)
                opener = self.resumer(holder)
                continue
            except StreamInterrupted as exc:
                if stop.is_set():
                    return DETACHED
                if not chain.background:
                    raise StreamInterrupted(
                        f"{exc} — a --no-background run cannot be resumed; its run "
                        f"{rid or '(unknown)'} may still be working on the server"
                    ) from None
                failures = 0 if progressed else failures + 1
                rid = chain.run_id
                if rid is None:
                    opener = self._recover(send, failures, str(exc), stop, adopt)
                    resent = True
                    self._reconnecting(str(exc), failures)
                    continue
                self._backoff(failures, str(exc), stop)
                self._reconnecting(str(exc), failures)
                opener = self.resumer(rid)
                continue
            except ServerUnavailable as exc:
                if stop.is_set():
                    return DETACHED
                failures = 0 if progressed else failures + 1
                if chain.run_id is None:
                    refused += 1
                    if not isinstance(exc, Unreachable) or refused > SEND_RETRIES or send is None:
                        raise  # the send reached the server: re-sending could start a 2nd run
                    # nothing listened (the backend may have relaunched the server): the send
                    # reached nobody, so sending it again (same otid) is safe
                    self._backoff(failures, str(exc), stop)
                    self._reconnecting(str(exc), failures)
                    opener = send.resend
                    resent = True
                    continue
                self._backoff(failures, str(exc), stop, at_least=getattr(exc, "retry_after", None))
                self._reconnecting(str(exc), failures)
                opener = self.resumer(chain.run_id)
                continue
            finally:
                chain.opened(None)
                close(stream)
            if stop.is_set():
                return DETACHED
            rid = chain.run_id
            if rid is None:
                raise StreamInterrupted("the server closed the stream before naming its run")
            if gap:
                self._reconnecting("a frame arrived past a hole in the seqs", 0)
                opener = self.resumer(rid)
                continue
            # a clean end of the stream without the end of the run
            if end.stop_reason is not None:
                self._reconnecting("the stream ended after the stop reason", 0)
                return self._tail(rid, end, stop, final=True)
            if not chain.background:
                raise StreamInterrupted(
                    f"the stream of run {rid} ended without a stop reason "
                    "(a --no-background run cannot be resumed)"
                )
            idle_eofs = 0 if progressed else idle_eofs + 1
            if idle_eofs >= chain.eof_checks:
                run = chain.backend.get_run(rid)
                if run.get("status") in FINAL_RUN_STATUSES:
                    read_any = tr.last_seq(rid) > origin or not origin
                    return self._server_ended(rid, run, read_any=read_any)
                if idle_eofs >= chain.max_reconnects:
                    raise StreamInterrupted(f"the stream of run {rid} keeps ending without data")
            self._backoff(idle_eofs, "the stream ended early", stop)
            self._reconnecting("the stream ended early", idle_eofs)
            opener = self.resumer(rid)

    # ---- bounded reads of what is stored ---------------------------------------------------
    def read_finished(self, rid: str, run: dict[str, Any], *, stop: threading.Event) -> Ending:
        """A run the server says is over, read from the transcript's seq to its end."""
        return self._tail(rid, RunEnd(), stop, final=True, run=run)

    def _tail(
        self,
        rid: str,
        end: RunEnd,
        stop: threading.Event,
        *,
        final: bool,
        run: dict[str, Any] | None = None,
    ) -> Ending:
        chain = self.chain
        tr = chain.transcript

        def on_frame(acc: Chunk) -> None:
            self.frames += 1
            self.last_data = chain.clock.monotonic()
            chain.notify()

        done = replay(
            chain.backend,
            rid,
            tr,
            end,
            silence=chain.tail_timeout,
            final=final,
            eof_checks=chain.eof_checks,
            batch_size=chain.batch_size,
            backoff=chain.backoff,
            stop=stop,
            clock=chain.clock,
            on_frame=on_frame,
            on_stream=chain.opened,
        )
        chain.opened(None)
        self.reconnects += done.reconnects
        if done.holes:
            chain.notice = _hole_notice(rid, tr.holes(rid))
        if stop.is_set():
            return DETACHED
        if end.stop_reason is None and end.error is None and run is not None:
            # the run's end was not among the frames after the cursor
            return self._server_ended(rid, run, read_any=done.frames > 0)
        return self._ended(rid, end)

    # ---- endings ---------------------------------------------------------------------------
    def finish_leftover(self, *, read: bool = True) -> None:
        """Read the rest of a stream whose run is over (its `[DONE]` and the body's end; a few
        reads at most) and close it. Called once the run's end is told: a server slow with its
        `[DONE]` delays nobody. Never raises: the run is over, only the connection is at stake."""
        stream, self.leftover = self.leftover, None
        if stream is None:
            return
        with contextlib.suppress(Exception):
            try:
                if read:
                    for _ in itertools.islice(stream, 4):
                        pass
            finally:
                close(stream)

    def _ended(self, rid: str, end: RunEnd) -> Ending:
        """The frames say the run is over; a run with a hole is checked with the server."""
        holes = self.chain.transcript.holes(rid)
        status = end.status
        if holes:
            server = self._server_status(rid)
            notice = _hole_notice(rid, holes)
            if server in (RunStatus.FAILED, RunStatus.CANCELLED):
                status = ChainStatus(server.value)
            elif status not in (ChainStatus.FAILED, ChainStatus.CANCELLED):
                status = ChainStatus.INCOMPLETE
            return Ending(status, end.stop_reason, end.error_text, notice)
        return Ending(status, end.stop_reason, end.error_text, self.chain.notice)

    def _server_ended(self, rid: str, run: dict[str, Any], *, read_any: bool) -> Ending:
        """The server says the run is over, but its frames stop before their end here."""
        status = str(run.get("status"))
        stop_reason = run.get("stop_reason")
        error = (run.get("metadata") or {}).get("error") if status == RunStatus.FAILED else None
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail")
        line = " ".join(str(error).split()) if error else None
        holes = self.chain.transcript.holes(rid)
        if status == RunStatus.COMPLETED and (read_any or holes):
            seq = self.chain.transcript.last_seq(rid)
            notice: str | None = (
                _hole_notice(rid, holes)
                if holes
                else f"run {rid} is over on the server ({stop_reason or status}) but its frames "
                f"stop at seq {seq} here: the rest is missing (incomplete)"
            )
            return Ending(ChainStatus.INCOMPLETE, stop_reason, None, notice)
        chain_status = ChainStatus(status) if status in FINAL_RUN_STATUSES else ChainStatus.FAILED
        notice = _hole_notice(rid, holes) if holes else self.chain.notice
        return Ending(chain_status, stop_reason, line, notice)

    def _server_status(self, rid: str) -> RunStatus | None:
        try:
            status = self.chain.backend.get_run(rid).get("status")
        except LettaNbError:
            return None  # unknown: the frames' own word stands (with the hole noted)
        return RunStatus(status) if status in FINAL_RUN_STATUSES else None

    # ---- reconnecting ----------------------------------------------------------------------
    def _recover(
        self,
        send: Send | None,
        failures: int,
        why: str,
        stop: threading.Event,
        adopt: Callable[[str], None],
    ) -> Opener:
        """The send broke before its first frame: find its run, or send it again (same otid).

        A conversation send is resumed by its otid in its conversation (the server says which
        run that otid started), and sent again with the same otid when no run has it (the
        first POST never got there): exactly one run either way.
        """
        if send is None:
            raise StreamInterrupted("the stream broke before its run was known")
        chain = self.chain
        if send.conversation_id is not None and send.otid is not None:
            self._backoff(failures, "the send broke before the first frame", stop)
            return self._by_otid(send.conversation_id, send.otid, send.resend)
        if not send.reattaches:
            rid = find_sent_run(
                chain.backend,
                agent_id=chain.agent_id,
                otid=send.otid,
                sent_at=send.sent_at,
                known=chain.transcript.runs,
                delays=chain.recover_delays,
                stop=stop,
                clock=chain.clock,
            )
            if rid is not None:
                adopt(rid)
                return self.resumer(rid)
        self._backoff(failures, "the send broke before the first frame", stop)
        return send.resend

    def _by_otid(self, conversation_id: str, otid: str, resend: Opener) -> Opener:
        backend = self.chain.backend

        def opener() -> Iterator[Chunk] | ChunkStream:
            stream = backend.resume_conversation(conversation_id, otid=otid, starting_after=0)
            try:
                first = next(iter(stream))
            except NotFound:  # no run has this otid: the send never reached the server
                close(stream)
                return resend()
            except StopIteration:
                return iter(())
            return _Prepended(first, stream)

        return opener

    def _sent_by(self, run_id: str, otid: str) -> bool:
        """The run holding the conversation is this send's own (its messages carry `otid`)."""
        try:
            return any(m.get("otid") == otid for m in self.chain.backend.run_messages(run_id))
        except LettaNbError:
            return False

    def resumer(self, rid: str) -> Opener:
        chain = self.chain

        def opener() -> Iterator[Chunk] | ChunkStream:
            after = chain.transcript.last_seq(rid)
            chain.transcript.begin_stream(rid, after)
            kw: dict[str, Any] = {}
            if chain.batch_size is not None:
                kw["batch_size"] = chain.batch_size
            return chain.backend.resume(rid, after, **kw)

        return opener

    def _backoff(
        self, attempt: int, why: str, stop: threading.Event, *, at_least: float | None = None
    ) -> None:
        chain = self.chain
        backoff = chain.backoff
        if backoff.exhausted(attempt):
            rid = chain.run_id
            seq = chain.transcript.last_seq(rid) if rid else 0
            raise StreamInterrupted(
                f"gave up after {backoff.attempts} reconnects ({why}); run {rid} can be "
                f"resumed from seq {seq} (re-run the cell or lnb.attach)"
            )
        if attempt <= 0:
            return
        chain.warning = f"reconnecting ({why}); attempt {attempt}/{backoff.attempts}"
        chain.notify()
        if at_least:  # the server said when to come back (a 429's Retry-After)
            chain.clock.wait(stop, at_least)
        else:
            backoff.wait(attempt, stop)

    def _reconnecting(self, why: str, attempt: int) -> None:
        """Count a connection opened after a break/EOF and say so until data flows again."""
        chain = self.chain
        self.reconnects += 1
        rid = chain.run_id
        seq = chain.transcript.last_seq(rid) if rid else 0
        where = f"run {rid} after seq {seq}" if rid else "the send"
        tries = f", attempt {attempt}/{chain.backoff.attempts}" if attempt > 0 else ""
        chain.warning = f"reconnecting to {where} ({why}{tries}; reconnect #{self.reconnects})"
        chain.notify()


def _hole_notice(rid: str, holes: list[tuple[int, int]]) -> str:
    missing = sum(b - a + 1 for a, b in holes)
    spans = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in holes[:3])
    more = f" and {len(holes) - 3} more" if len(holes) > 3 else ""
    return (
        f"run {rid}: the server no longer has seqs {spans}{more} ({missing} frames); "
        "the run is incomplete here"
    )


class _Prepended:
    """A stream with its first chunk already read (to tell a 404 from a run), still closable
    from another thread."""

    def __init__(self, first: Chunk, stream: Iterator[Chunk] | ChunkStream) -> None:
        self._first: Chunk | None = first
        self._stream = stream
        self._iter = iter(stream)

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        first, self._first = self._first, None
        return first if first is not None else next(self._iter)

    @property
    def _gen(self) -> Any:  # `replay.close` closes the inner generator, in the reader thread
        return getattr(self._stream, "_gen", self._stream)

    def close(self) -> None:  # detach, from another thread: the connection (thread-safe)
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            closer()
