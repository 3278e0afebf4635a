"""Read golden SSE recordings without the SDK: frames, their stored seqs, their raw bytes.

Shared by the core reducer tests and the client fake server (tests/client/fake_letta.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from letta_nb.core.chunks import Chunk


@dataclass
class Frame:
    raw: bytes  # the frame's exact bytes, blank line included
    event: str | None
    data: Any  # decoded JSON, or the string "[DONE]"
    seq: int | None = None  # stored seq (visible or implicit); None for keepalives

    @property
    def done(self) -> bool:
        return self.data == "[DONE]"


def read_frames(path: Path) -> list[Frame]:
    body = path.read_bytes()
    frames: list[Frame] = []
    for block in body.split(b"\n\n"):
        if not block.strip():
            continue
        event = None
        data_lines: list[str] = []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data_lines.append(line[5:].lstrip())
        text = "\n".join(data_lines)
        data: Any = text if text.startswith("[DONE]") else json.loads(text)
        frames.append(Frame(block + b"\n\n", event, data))
    _number(frames)
    return frames


def _number(frames: list[Frame]) -> None:
    """Stored seqs: visible ones as sent, hidden ones previous + 1; keepalives get None."""
    last = 0
    for f in frames:
        seq = f.data.get("seq_id") if isinstance(f.data, dict) else None
        kind = f.data.get("message_type") if isinstance(f.data, dict) else None
        if kind == "ping" and (seq is None or seq <= last):
            continue  # a keepalive: not stored
        if seq is None:
            seq = last + 1
        f.seq = seq
        last = seq


def to_chunks(frames: list[Frame]) -> list[Chunk]:
    """What the backend yields for these frames: [DONE] ends, `event: error` is an error chunk."""
    out: list[Chunk] = []
    for f in frames:
        if f.done:
            break
        out.append(Chunk.from_json(f.data))
        if f.event == "error":
            break
    return out


def sse_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.sse"))


def starting_after(sse_path: Path) -> int:
    """The recorded request's `starting_after` (0 for sends and replays from the start)."""
    meta = json.loads(sse_path.with_suffix(".json").read_text())
    body = meta.get("request", {}).get("json") or {}
    return int(body.get("starting_after") or 0)
