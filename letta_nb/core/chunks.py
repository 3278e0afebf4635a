"""One streamed frame of a Letta run, decoupled from the SDK's pydantic types.

The backend turns each SDK object into a `Chunk` whose `data` is the frame's plain JSON object.
Frames that Letta stores without a visible seq (``stop_reason``, ``usage_statistics``) still use
up a number on the server; the follower assigns them their implicit seq so a resume cursor can
point past them (see `SeqTracker`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol import MessageType, StopReason
from .errors import SeqGap


def new_otid() -> str:
    """A client id for one send's messages: a broken send's run is found again by it."""
    return f"otid-{uuid.uuid4()}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A frame: its type, its run, its (effective) seq and its JSON object."""

    message_type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    seq_id: int | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, run_id: str | None = None) -> Chunk:
        """Build from a decoded SSE ``data:`` object (the wire form)."""
        return cls(
            message_type=str(obj.get("message_type") or "unknown"),
            data=obj,
            run_id=obj.get("run_id") or run_id,
            seq_id=obj.get("seq_id"),
        )

    @property
    def id(self) -> str | None:
        return self.data.get("id")

    @property
    def is_ping(self) -> bool:
        return self.message_type == MessageType.PING

    @property
    def is_terminal(self) -> bool:
        """A frame after which no further data of this run can follow a reader."""
        if self.message_type == MessageType.ERROR:
            return True
        return (
            self.message_type == MessageType.STOP_REASON
            and self.data.get("stop_reason") == StopReason.CANCELLED
        )

    def with_seq(self, seq_id: int, run_id: str | None) -> Chunk:
        return Chunk(self.message_type, self.data, run_id or self.run_id, seq_id)


class SeqTracker:
    """Dedupe by seq, give hidden frames their implicit seq and refuse holes, for one run.

    Background streams are contiguous: every stored frame is `previous + 1`, whether or not its
    JSON shows the number. "Previous" is the frame before it *on the same connection* (a replay
    from 0 re-sends stop_reason/usage after the seqs it already saw: they must dedupe too), so a
    reader opening a resume calls `begin(starting_after)`. Keepalive pings repeat the last seq
    (or carry none) and are liveness, never data. ``accept`` returns the chunk with its
    effective seq, or None for a duplicate or a keepalive ping; a frame past a hole raises
    `SeqGap` (nothing is accepted) until the reader records the hole with `skip_hole`.
    """

    __slots__ = ("_prev", "holes", "last_seq", "run_id")

    def __init__(self, run_id: str | None, last_seq: int = 0) -> None:
        self.run_id = run_id
        self.last_seq = last_seq
        self._prev: int | None = None  # None: the stream continues from last_seq
        #: Seq ranges `(first, last)` the server no longer has (recorded by `skip_hole`).
        self.holes: list[tuple[int, int]] = []

    def begin(self, starting_after: int) -> None:
        """A new connection that starts after `starting_after` (exclusive).

        Starting past what is known is a deliberate skip (attach from seq N): the frames up to
        it are not expected, so they are not a hole.
        """
        self._prev = starting_after
        if starting_after > self.last_seq:
            self.last_seq = starting_after

    def skip_hole(self, seq: int) -> None:
        """Accept that the frames before `seq` are gone: record the hole, continue before `seq`."""
        if seq > self.last_seq + 1:
            self.holes.append((self.last_seq + 1, seq - 1))
            self.last_seq = seq - 1
        self._prev = seq - 1

    def accept(self, chunk: Chunk) -> Chunk | None:
        seq = chunk.seq_id
        if chunk.message_type == MessageType.PING:
            if seq is None:
                return None
            self._prev = seq  # the stored ping is seq 1; keepalives repeat the last delivered
            # Only the stored initial ping advances the cursor; keepalives repeat the last seq.
            if seq == self.last_seq + 1:
                self.last_seq = seq
                return chunk
            return None
        if seq is None:
            seq = (self.last_seq if self._prev is None else self._prev) + 1
        last = self.last_seq
        if seq > last + 1:
            raise SeqGap(self.run_id or chunk.run_id, last, seq)
        self._prev = seq
        if seq <= last:
            return None
        self.last_seq = seq
        if self.run_id is None:
            self.run_id = chunk.run_id
        if chunk.seq_id == seq and chunk.run_id == self.run_id:
            return chunk
        return Chunk(chunk.message_type, chunk.data, self.run_id, seq)
