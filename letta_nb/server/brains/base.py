"""The contract between the run engine and a "brain" (the thing that plays the LLM).

A brain never touches HTTP, SQLite or SSE. For each turn it is a generator of plain events;
the runner turns them into Letta message frames (ids, otids, step ids, seq numbers), executes
tools, stores everything and decides the run's status. Keeping the brain this small is what
lets the demo brain stay deterministic and lets tests script exact runs.

Generator protocol (`Brain.respond` and `Brain.resume_after_approval`):

* yield ``Reasoning(text)`` / ``Assistant(text)``: one streamed delta. Consecutive deltas of the
  same kind within a step form one message (one message id); any other event except ``Sleep``
  closes it.
* yield ``Sleep(seconds)``: produce nothing for that long (the runner sleeps in small slices so
  cancellation stays prompt, and keepalive pings flow to readers). It keeps the open message
  open: ``Assistant, Sleep, Assistant`` streams one message whose deltas share one id.
* ``result = yield ToolCall(name, arguments)``: the runner streams a ``tool_call_message``,
  runs ``tools[name]`` and streams its ``tool_return_message``; the generator receives a
  ``ToolResult``. A new step (new step id) starts after every tool return.
  If the tool is in ``Brain.approval_required`` the runner instead streams an
  ``approval_request_message``, ends the run with ``requires_approval`` and closes the
  generator. The answer arrives in a *new* run, which calls ``resume_after_approval``.
* yield ``Fail(error_type, message)``: the run fails the way an upstream LLM failure does
  (stop_reason ``llm_api_error`` then an ``event: error`` frame).
* returning ends the turn with ``end_turn``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str


@dataclass(frozen=True, slots=True)
class Assistant:
    text: str


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fail:
    error_type: str = "llm_error"
    message: str = "The model provider returned an error."


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced. ``status`` is "success" or "error" (denials are errors)."""

    tool_call_id: str
    name: str
    status: str
    tool_return: str
    arguments: dict[str, Any] = field(default_factory=dict)


BrainEvent = Reasoning | Assistant | Sleep | ToolCall | Fail
Turn = Generator[BrainEvent, ToolResult | None, None]


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Everything a brain may know about the turn it is playing."""

    agent_id: str
    agent_name: str
    run_id: str
    workdir: Path  # per-agent folder where tools may write files (reports)
    history: tuple[Mapping[str, Any], ...] = ()  # earlier user/assistant messages, oldest first


Tool = Callable[..., str]

# A tool function with a parameter of this name gets the agent's workdir (an absolute path
# string) from the runner at execution time. It is never part of the call's visible arguments,
# so approval cards and frame counts do not depend on where the server keeps its files.
WORKDIR_PARAM = "workdir"


def accepts_workdir(func: Callable[..., Any]) -> bool:
    """Whether ``func`` declares the ``workdir`` parameter the runner fills in."""
    try:
        return WORKDIR_PARAM in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class Brain(Protocol):
    """A model handle such as ``letta_nb/demo``: deterministic turns plus the tools it may call."""

    handle: str
    tools: Mapping[str, Tool]
    approval_required: frozenset[str]

    def respond(self, ctx: TurnContext, user_text: str) -> Turn: ...

    def resume_after_approval(self, ctx: TurnContext, result: ToolResult) -> Turn:
        """Continue after an approved (executed) or denied (status "error") gated call."""
        ...
