"""The one bounded replay of a run's stored frames, used by every read that is not the live one.

Tail reads after a stop reason, the chain rebuilt after a kernel restart, `RunHandle.chunks`,
`chunks_frame` and attaching a finished run all read stored frames the same way: from the
sink's own last seq, resuming after every broken connection (bounded backoff), never past a
known end (past its end a real Letta server never closes the stream), and with a hole in the
seqs re-read once, then recorded. Nothing here starts a thread or a run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core.chunks import Chunk, SeqTracker
from ..core.clock import SYSTEM, Clock
from ..core.errors import LettaNbError, SeqGap, ServerUnavailable, StreamInterrupted, StreamTimeout
from ..protocol import MessageType as MT
from .ending import CONTROL, RunEnd
from .reconnect import Backoff

if TYPE_CHECKING:
    from .._protocols import LettaBackend


class FrameSink(Protocol):
    """Where replayed frames go: a `Transcript`, or a `FrameLog` for tables."""

    def last_seq(self, run_id: str) -> int: ...

    def begin_stream(self, run_id: str, starting_after: int) -> None: ...

    def apply(self, chunk: Chunk, run_id: str | None = None) -> Chunk | None: ...

    def skip_hole(self, run_id: str, seq: int) -> None: ...


class FrameLog:
    """A sink that keeps every accepted frame of one run, with its effective seq (for tables)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tracker = SeqTracker(run_id)
        self.frames: list[Chunk] = []

    def last_seq(self, run_id: str) -> int:
        return self.tracker.last_seq

    def begin_stream(self, run_id: str, starting_after: int) -> None:
        self.tracker.begin(starting_after)

    def apply(self, chunk: Chunk, run_id: str | None = None) -> Chunk | None:
        acc = self.tracker.accept(chunk)
        if acc is not None:
            self.frames.append(acc)
        return acc

    def skip_hole(self, run_id: str, seq: int) -> None:
        self.tracker.skip_hole(seq)

    @property
    def holes(self) -> list[tuple[int, int]]:
        return list(self.tracker.holes)


@dataclass
class Replayed:
    """What one replay read."""

    frames: int = 0
    #: Connections opened after the first (a cut, an early EOF, a hole re-read).
    reconnects: int = 0
    #: The run's end (per the end rule) or `until` was reached.
    reached: bool = False
    #: Seq ranges the server no longer had (recorded in the sink too).
    holes: list[tuple[int, int]] = field(default_factory=list)


def replay(
    backend: LettaBackend,
    run_id: str,
    sink: FrameSink,
    end: RunEnd,
    *,
    until: int | None = None,
    silence: float | None = None,
    quiet_reads: int = 2,
    final: bool = False,
    eof_checks: int = 3,
    deadline: float | None = None,
    include_pings: bool = True,
    batch_size: int | None = None,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    clock: Clock = SYSTEM,
    on_frame: Callable[[Chunk], None] | None = None,
    on_stream: Callable[[Any], None] | None = None,
) -> Replayed:
    """Read `run_id`'s stored frames after `sink.last_seq(run_id)` into `sink`, bounded.

    Ends at the first of: the run's end (`end.over`), `until` (a seq already known to exist:
    never read past it), `quiet_reads` read timeouts of `silence` seconds in a row or
    `silence` seconds of keepalives only (nothing more is stored now), `eof_checks` empty
    streams of a `final` run (a finished run at its end sends only `[DONE]`), the monotonic
    `deadline`, or `stop`. A broken connection resumes from the last seq (`backoff`: bounded,
    then `StreamInterrupted` says where it stopped); a hole is re-read once, then recorded.
    """
    backoff = backoff or Backoff(clock=clock)
    stop = stop or threading.Event()
    out = Replayed()
    failures = timeouts = empty = 0
    regaps: set[int] = set()
    opened = 0
    while not stop.is_set():
        after = sink.last_seq(run_id)
        if end.over or (until is not None and after >= until):
            break
        if deadline is not None and clock.monotonic() >= deadline:
            break
        kw: dict[str, Any] = {"include_pings": include_pings}
        if silence is not None:
            kw["timeout"] = silence
        if batch_size is not None:
            kw["batch_size"] = batch_size
        if opened:
            out.reconnects += 1
        opened += 1
        progressed = False
        reason = "eof"
        stream = None
        try:
            sink.begin_stream(run_id, after)
            stream = backend.resume(run_id, after, **kw)
            if on_stream is not None:
                on_stream(stream)
            idle_until = None if silence is None else clock.monotonic() + silence
            for chunk in stream:
                try:
                    acc = sink.apply(chunk, run_id)
                except SeqGap as gap:
                    if gap.after not in regaps:  # read again from the last contiguous seq
                        regaps.add(gap.after)
                        reason = "gap"
                        break
                    sink.skip_hole(run_id, gap.seq)  # the server sent the same hole twice
                    out.holes.append((gap.after + 1, gap.seq - 1))
                    acc = sink.apply(chunk, run_id)
                if acc is None:  # a duplicate or a keepalive
                    if idle_until is not None and clock.monotonic() > idle_until:
                        reason = "idle"  # only keepalives: nothing more is stored
                        break
                    continue
                progressed = True
                if idle_until is not None:
                    idle_until = clock.monotonic() + (silence or 0.0)
                if acc.message_type == MT.PING:
                    continue  # the stored ping: a seq, no data
                out.frames += 1
                if acc.message_type in CONTROL and end.see(acc):
                    break
                if on_frame is not None:
                    on_frame(acc)
                if until is not None and sink.last_seq(run_id) >= until:
                    break
                if stop.is_set() or (deadline is not None and clock.monotonic() >= deadline):
                    break
        except StreamTimeout:
            timeouts = 1 if progressed else timeouts + 1
            if timeouts >= quiet_reads:
                break  # silence: nothing is stored after the cursor (yet)
            continue
        except (StreamInterrupted, ServerUnavailable):
            failures = 0 if progressed else failures + 1
            if _give_up(backoff, failures, run_id, sink.last_seq(run_id), stop):
                break
            continue
        finally:
            close(stream)
        timeouts = 0
        if reason == "idle":
            break
        if reason == "gap" or progressed:
            failures = empty = 0
            continue
        empty += 1  # a clean end of a stream that brought nothing
        if final and empty >= eof_checks:
            break  # a finished run with nothing after the cursor
        failures += 1
        if _give_up(backoff, failures, run_id, sink.last_seq(run_id), stop):
            break
    out.reached = end.over or (until is not None and sink.last_seq(run_id) >= until)
    return out


def _give_up(backoff: Backoff, failures: int, run_id: str, seq: int, stop: threading.Event) -> bool:
    """Wait before the next try; raise once the failures in a row exceed the bound."""
    if backoff.exhausted(failures):
        raise StreamInterrupted(
            f"gave up reading run {run_id} after {backoff.attempts} broken connections in a "
            f"row; it can be read again from seq {seq}"
        )
    return backoff.wait(failures, stop)


def close(stream: Any) -> None:
    """Close a stream's generator from its own thread (runs its cleanup now, not at GC)."""
    if stream is None:
        return
    gen = getattr(stream, "_gen", stream)
    closer = getattr(gen, "close", None)
    if closer is not None:
        with contextlib.suppress(ValueError, LettaNbError):
            closer()


#: How long `stored_frames` listens to a run that is still live and followed by nobody here.
LIVE_READ_TIMEOUT = 2.0
LIVE_READ_LIMIT = 10.0


def stored_frames(
    backend: LettaBackend,
    run_id: str,
    *,
    until: int | None = None,
    live: bool = False,
    batch_size: int | None = None,
    clock: Clock = SYSTEM,
) -> FrameLog:
    """Every stored frame of one run (seq-less frames get their seq), for tables.

    Read up to `until` (a run followed here: its cursor), to its end (a finished run), or,
    for a `live` run followed by nobody here, until `LIVE_READ_TIMEOUT` seconds of silence or
    `LIVE_READ_LIMIT` seconds in all. Holes the server no longer fills are in `log.holes`.
    """
    log = FrameLog(run_id)
    if live:
        replay(
            backend,
            run_id,
            log,
            RunEnd(),
            silence=LIVE_READ_TIMEOUT,
            quiet_reads=1,
            deadline=clock.monotonic() + LIVE_READ_LIMIT,
            include_pings=False,
            batch_size=batch_size,
            clock=clock,
        )
    else:
        replay(
            backend,
            run_id,
            log,
            RunEnd(),
            until=until,
            final=True,
            include_pings=False,
            batch_size=batch_size,
            clock=clock,
        )
    return log
