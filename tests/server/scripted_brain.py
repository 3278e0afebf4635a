"""A tiny scripted brain for server tests: exact, fast, deterministic runs by directive."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from letta_nb.server.brains.base import (
    Assistant,
    Fail,
    Reasoning,
    Sleep,
    ToolCall,
    ToolResult,
    Turn,
    TurnContext,
)

HANDLE = "test/scripted"


def add(a: int, b: int) -> str:
    return json.dumps({"sum": int(a) + int(b)})


def dangerous_op(target: str, reason: str) -> str:
    return f"dangerous_op executed on {target} because {reason}"


def boom() -> str:
    raise ValueError("tool exploded")


class ScriptedBrain:
    """Directives: ``echo <words>``, ``long N [DELAY_MS]``, ``tool``, ``gated``, ``approve``,
    ``fail``, ``fail500``, ``silent S``, ``slowend S``, ``think``, ``boom``, ``custom NAME``,
    ``recall`` (the earlier user messages of this history). Anything else echoes the text."""

    handle = HANDLE
    tools: Mapping[str, Any] = {"add": add, "dangerous_op": dangerous_op, "boom": boom}
    approval_required = frozenset({"dangerous_op"})

    def respond(self, ctx: TurnContext, user_text: str) -> Turn:
        words = user_text.split()
        cmd = words[0] if words else ""
        if cmd == "long":
            n = int(words[1])
            delay = float(words[2]) / 1000 if len(words) > 2 else 0.0
            for i in range(n):
                if delay:
                    yield Sleep(delay)
                yield Assistant(("" if i == 0 else " ") + f"w{i:04d}")
        elif cmd == "tool":
            result = yield ToolCall("add", {"a": 2, "b": 3})
            assert result is not None
            yield Assistant("The sum is")
            yield Assistant(" " + json.loads(result.tool_return)["sum"].__str__())
        elif cmd == "gated":
            yield Assistant("Asking first.")
            yield ToolCall("dangerous_op", {"target": "prod-db", "reason": "user asked"})
        elif cmd == "custom":
            result = yield ToolCall(words[1], {"target": "x", "reason": "y"})
            assert result is not None
            yield Assistant(f"custom said {result.tool_return}")
        elif cmd == "approve":  # a bare gated call, like the golden fake model's APPROVE
            yield ToolCall("dangerous_op", {"target": "prod-db", "reason": "user asked"})
        elif cmd == "fail500":  # a bare model failure, like the golden FAIL500
            yield Fail("llm_error", "An error occurred with the LLM request.")
        elif cmd == "slowend":  # one delta, then S seconds of silence before the end
            yield Assistant("w0000")
            yield Sleep(float(words[1]))
        elif cmd == "fail":
            yield Assistant("partial")
            yield Fail("llm_error", "An error occurred with the LLM request.")
        elif cmd == "silent":
            yield Sleep(float(words[1]))
            yield Assistant("done")
        elif cmd == "think":
            yield Reasoning("Let me")
            yield Reasoning(" think.")
            yield Assistant("Thought.")
        elif cmd == "recall":  # what this history holds: a conversation sees only its own
            said = [str(m["content"]) for m in ctx.history if m["role"] == "user"]
            yield Assistant(f"{len(said)} earlier:")
            for text in said:
                yield Assistant(f" [{text}]")
        elif cmd == "boom":
            result = yield ToolCall("boom", {})
            assert result is not None
            yield Assistant(f"status {result.status}")
        else:
            text = user_text if cmd != "echo" else " ".join(words[1:])
            for i, w in enumerate(["Echo:", *text.split()]):
                yield Assistant(w if i == 0 else " " + w)

    def resume_after_approval(self, ctx: TurnContext, result: ToolResult) -> Turn:
        yield Assistant(f"Tool said: {result.status}")
        yield Assistant(" " + result.tool_return)
