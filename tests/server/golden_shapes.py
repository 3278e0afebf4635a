"""Shape extraction for comparing our wire output with the recorded Letta server.

A *shape* keeps what a client depends on and drops what legitimately differs (ids, dates,
text, counts of repeated deltas): per SSE frame its event name, message_type, key order and
JSON value types (one level into nested objects); consecutive frames of one shape collapse into
one line. ``assert_same`` prints a unified diff of two shapes when they differ.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any


def type_name(value: Any, depth: int = 1) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        inner = {type_name(v, depth - 1) for v in value}
        return f"list[{'|'.join(sorted(inner))}]" if depth > 0 and inner else "list"
    if isinstance(value, dict):
        if depth <= 0:
            return "object"
        return "{" + ",".join(f"{k}:{type_name(v, depth - 1)}" for k, v in value.items()) + "}"
    return type(value).__name__


def split_sse(body: str) -> list[tuple[str | None, str]]:
    """(event name, data line) per frame."""
    out = []
    for block in body.split("\n\n"):
        if not block:
            continue
        event, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, data))
    return out


def frame_shape(event: str | None, data: str) -> str:
    head = f"event:{event} " if event else ""
    if data == "[DONE]":
        return head + "[DONE]"
    obj = json.loads(data)
    body = ",".join(f"{k}:{type_name(v)}" for k, v in obj.items() if k != "message_type")
    return f"{head}{obj.get('message_type')}({body})"


def sse_shape(body: str) -> list[str]:
    """One line per run of identically shaped frames (repeat counts dropped)."""
    lines: list[str] = []
    for event, data in split_sse(body):
        shape = frame_shape(event, data)
        if not lines or lines[-1] != shape:
            lines.append(shape)
    return lines


def seq_rule(body: str) -> dict[str, Any]:
    """seq numbering as a client sees it: first visible seq, contiguity, and hidden seqs.

    Keepalive pings repeat an already delivered seq (or null) and are left out; the error
    frame's offset from the last visible seq shows the hidden stop_reason seq (2 = one hidden).
    """
    seqs: list[int] = []
    error_offset = None
    null_seqs = 0
    for event, data in split_sse(body):
        if data == "[DONE]":
            continue
        obj = json.loads(data)
        if "seq_id" not in obj:
            continue
        seq = obj["seq_id"]
        if seq is None:
            null_seqs += 1
            continue
        if obj.get("message_type") == "ping" and seqs and seq <= seqs[-1]:
            continue  # keepalive: not new data
        if event == "error":
            error_offset = seq - (seqs[-1] if seqs else 0)
            continue
        seqs.append(seq)
    return {
        "first": seqs[0] if seqs else None,
        "contiguous": seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True,
        "error_offset": error_offset,
        "null_seqs": null_seqs > 0,
    }


# Optional[int] timing fields compared as "int or null": the recorded server fills
# ``total_duration_ns`` asynchronously (null in 14 recorded Run bodies, an int in 40) and never
# fills ``ttft_ns`` on this path; the embedded server fills both (run history plots them).
TIMING_DEPENDENT = frozenset({"total_duration_ns", "ttft_ns"})


def rest_shape(obj: Any) -> list[str]:
    """Key order and value types of a JSON body (a list: of its first item)."""
    if isinstance(obj, list):
        return ["list of:", *rest_shape(obj[0])] if obj else ["empty list"]
    if isinstance(obj, dict):
        return [
            f"{k}: {'int|null' if k in TIMING_DEPENDENT else type_name(v, 0)}"
            for k, v in obj.items()
        ]
    return [type_name(obj)]


def golden_json(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / f"{name}.json").read_text())


def golden_sse(root: Path, name: str) -> str:
    return (root / f"{name}.sse").read_text()


def assert_same(
    ours: list[str] | dict[str, Any], golden: list[str] | dict[str, Any], what: str
) -> None:
    if ours == golden:
        return
    if isinstance(ours, dict) and isinstance(golden, dict):
        ours = [f"{k}={v}" for k, v in ours.items()]
        golden = [f"{k}={v}" for k, v in golden.items()]
    diff = "\n".join(difflib.unified_diff(golden, ours, "recorded Letta", "letta_nb", lineterm=""))
    raise AssertionError(f"{what}: shapes differ\n{diff}")


def run_id_of(body: str) -> str:
    """The run id of an SSE body (its first frame carries it)."""
    return json.loads(split_sse(body)[0][1])["run_id"]


def same_stream(ours: str, golden: str, what: str) -> None:
    """Frame shapes and seq rules of one stream, in one line per scenario."""
    assert_same(sse_shape(ours), sse_shape(golden), what)
    assert_same(seq_rule(ours), seq_rule(golden), what + " (seq)")
