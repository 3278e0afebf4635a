"""The one encoder of SSE bytes: every frame a reader receives is built here.

Frames are compact JSON in Letta's key order (``ensure_ascii=False``, as recorded). Token deltas
of a background run are the hot path: ``TextDeltas`` renders them by string assembly around a
cached prefix, producing exactly the bytes ``render`` would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from letta_nb.server import schemas
from letta_nb.server.ids import new_id

DONE = b"data: [DONE]\n\n"
CANCELLED = b'data: {"message_type": "stop_reason", "stop_reason": "cancelled"}\n\n'

_encode_str = json.encoder.encode_basestring


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def render(frame: dict[str, Any], seq: int | None, *, event: str | None = None) -> bytes:
    """One SSE frame. ``seq`` is injected only where the frame has a ``seq_id`` key."""
    if "seq_id" in frame:
        frame["seq_id"] = seq
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {dumps(frame)}\n\n".encode()


def keepalive_ping(run_id: str, seq: int | None) -> bytes:
    """A ping that is not stored; it repeats the last seq this connection delivered."""
    frame = schemas.envelope(new_id("ping"), "ping", otid=None, step_id=None, run_id=run_id)
    return render(frame, seq)


def error_frames(error: dict[str, Any], first_seq: int | None) -> list[bytes]:
    """How a failed background run ends: ``stop_reason: error`` then ``event: error``."""
    second = None if first_seq is None else first_seq + 1
    return [
        render(schemas.stop_reason_frame("error"), None),
        render(dict(error), second, event="error"),
    ]


@dataclass(slots=True)
class TextDeltas:
    """The message being streamed right now (consecutive deltas of one kind, one message id),
    with the cached byte prefix/suffix of its background delta frames."""

    kind: str  # "assistant_message" or "reasoning_message"
    message_id: str
    otid: str
    _blocks: list[str] = field(default_factory=list)  # every 4096 deltas joined
    _pieces: list[str] = field(default_factory=list)
    _date: str = ""
    _prefix: str = ""
    _suffix: str = ""
    _end: str = ""

    def append(self, text: str) -> None:
        """Keep a delta for the whole message; every 4096 deltas become one string, so a
        million-token message costs its text, not a million small objects."""
        self._pieces.append(text)
        if len(self._pieces) >= 4096:
            self._blocks.append("".join(self._pieces))
            self._pieces.clear()

    def full(self) -> str:
        return "".join(self._blocks) + "".join(self._pieces)

    def frame(self, run_id: str, step_id: str, text: str) -> dict[str, Any]:
        """The whole-message (or foreground delta) frame as a dict."""
        frame = schemas.envelope(
            self.message_id, self.kind, otid=self.otid, step_id=step_id, run_id=run_id
        )
        if self.kind == "assistant_message":
            frame["content"] = text
        else:
            frame["source"] = "reasoner_model"
            frame["reasoning"] = text
            frame["signature"] = None
        return frame

    def delta_bytes(self, run_id: str, step_id: str, seq: int, text: str) -> bytes:
        """Hot path: one numbered delta frame, byte-identical to ``render(self.frame(...))``."""
        date = schemas.message_date()
        if self._date != date:
            assistant = self.kind == "assistant_message"
            self._date = date
            self._prefix = (
                f'data: {{"id":"{self.message_id}","date":"{date}","name":null,'
                f'"message_type":"{self.kind}","otid":"{self.otid}","sender_id":null,'
                f'"step_id":"{step_id}","is_err":null,"seq_id":'
            )
            self._suffix = (
                f',"run_id":"{run_id}","content":'
                if assistant
                else f',"run_id":"{run_id}","source":"reasoner_model","reasoning":'
            )
            self._end = "}\n\n" if assistant else ',"signature":null}\n\n'
        return f"{self._prefix}{seq}{self._suffix}{_encode_str(text)}{self._end}".encode()
