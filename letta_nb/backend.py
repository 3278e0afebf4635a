"""The only module that imports `letta_client`: SDK calls in, `Chunk`s and one-line errors out.

Works against any Letta server (Cloud, self-hosted, the embedded one): only public endpoints.
Sends never retry inside the SDK (a retried POST starts a second run); every message item carries
a client `otid` so a deliberate retry of the same send can be recognised. Streams are read as the
SDK's `Stream[object]`: each frame arrives as its plain JSON dict (the SDK's SSE decoding and
error handling, without its per-frame pydantic union validation, which is about half of the
SDK's per-frame cost: see docs/benchmarks.md). Other SDK objects become plain dicts by reading
pydantic's `__dict__`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
from letta_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Letta,
    Stream,
)
from pydantic import BaseModel

from .core.chunks import Chunk
from .core.errors import (
    ConfigurationError,
    Conflict,
    Expired,
    LettaNbError,
    NotFound,
    PendingApproval,
    ServerUnavailable,
    StreamInterrupted,
    StreamTimeout,
    Unauthorized,
)
from .core.secrets import mask, redact, register_secret
from .protocol import MessageType as MT

_PLAIN = frozenset({str, int, float, bool, type(None)})


def new_otid() -> str:
    return f"otid-{uuid.uuid4()}"


def _plain(obj: BaseModel) -> dict[str, Any]:
    """A pydantic object as its JSON dict; nested models converted only where present."""
    data = obj.__dict__
    extra = obj.__pydantic_extra__
    if extra:
        data = {**data, **extra}
    for key, value in data.items():
        kind = value.__class__
        if kind in _PLAIN or kind is datetime:  # `date` stays a datetime: no per-frame format
            continue
        if isinstance(value, BaseModel):
            data[key] = _plain(value)
        elif kind is list:
            data[key] = [_plain(v) if isinstance(v, BaseModel) else v for v in value]
    return data


def to_chunk(item: Any) -> Chunk:
    """SDK streaming object → Chunk (the message_type the server sent, even for unknown types)."""
    if item.__class__ is dict:  # a frame's JSON object (Stream[object]): used as is
        data = item
    else:
        data = _plain(item) if isinstance(item, BaseModel) else dict(item)
    return Chunk(
        data.get("message_type") or "unknown", data, data.get("run_id"), data.get("seq_id")
    )


def _error_chunk(body: Any, run_id: str | None) -> Chunk:
    """`event: error` body → error Chunk; tolerate the HTTP layer's `{"error", "code"}` form."""
    if isinstance(body, dict):
        data = dict(body)
        if "message" not in data and "error" in data:
            data["message"] = str(data["error"])
    else:
        data = {"message": str(body)}
    data["message_type"] = MT.ERROR
    data.setdefault("run_id", run_id)
    return Chunk(MT.ERROR, data, data.get("run_id") or run_id, data.get("seq_id"))


def _detail(body: Any) -> str:
    """The human part of a `{"detail": ...}` body, short (real 404 details run to 400 chars)."""
    detail: Any = body
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body))
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("code") or detail
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        detail = "; ".join(str(d.get("msg", d)) for d in detail[:3])
    text = " ".join(str(detail).split())
    return text if len(text) <= 200 else text[:197] + "..."


class ChunkStream:
    """An iterator of Chunks whose `close()` may be called from another thread (detach)."""

    __slots__ = ("_gen", "_stream")

    def __init__(self, gen: Iterator[Chunk]) -> None:
        self._gen = gen
        self._stream: Any = None

    def __iter__(self) -> Iterator[Chunk]:
        return self._gen

    def __next__(self) -> Chunk:
        return next(self._gen)

    def close(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # a half-read socket, from another thread
                stream.response.close()


class Backend:
    """A connection to one Letta server (see docs/architecture.md, "Backend")."""

    #: Embedded sessions: relaunch the server (returns its maybe-new base URL, or None).
    on_unreachable: Callable[[], str | None] | None = None

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        stream_timeout: float = 90.0,
        max_retries: int = 2,
    ) -> None:
        register_secret(api_key)
        register_secret(os.environ.get("LETTA_API_KEY"))  # the SDK falls back to it
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.stream_timeout = stream_timeout
        #: True when the server re-attaches a re-sent otid to its run (the embedded server).
        self.reattaches_otid = False
        self._client = Letta(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=max_retries,
            http_client=http_client,
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self._once = self._client.with_options(max_retries=0)

    def __repr__(self) -> str:
        return f"Backend({self.base_url!r}, api_key={mask(self._api_key)})"

    # ---- errors ----------------------------------------------------------------------------
    def _error(self, exc: BaseException, what: str) -> LettaNbError:
        """SDK/httpx exception → one redacted line (the caller raises it `from None`)."""
        url = self.base_url
        if isinstance(exc, LettaNbError):
            return exc
        if isinstance(exc, APIStatusError):
            code, body = exc.status_code, exc.body
            detail = _detail(body)
            if code in (401, 403):
                err: LettaNbError = Unauthorized(
                    f"the Letta server at {url} refused the API key (HTTP {code}) for {what}",
                    hint="set LETTA_API_KEY or pass api_key= to connect()",
                )
            elif code == 404:
                err = NotFound(f"{what} was not found on {url}")
            elif code == 409:
                inner = body.get("detail") if isinstance(body, dict) else None
                if isinstance(inner, dict) and inner.get("code") == "PENDING_APPROVAL":
                    err = PendingApproval(
                        f"the agent is waiting for an approval ({what}): approve or deny the "
                        "pending tool call first"
                    )
                else:
                    err = Conflict(f"{what}: the server reported a conflict: {detail}")
            elif code == 410:
                err = Expired(
                    f"{what} is past the server's stream retention and cannot be replayed: {detail}"
                )
            elif code in (400, 422):
                err = ConfigurationError(f"the server rejected {what} (HTTP {code}): {detail}")
            elif code >= 500:
                err = ServerUnavailable(
                    f"the Letta server at {url} failed on {what} (HTTP {code}): {detail}"
                )
            else:
                err = ConfigurationError(f"{what} failed (HTTP {code}): {detail}")
        elif isinstance(exc, APITimeoutError | httpx.TimeoutException):
            err = StreamTimeout(f"timed out waiting for the Letta server at {url} ({what})")
        elif isinstance(exc, APIConnectionError | httpx.ConnectError):
            cause = exc.__cause__ if isinstance(exc, APIConnectionError) else exc
            if isinstance(cause, httpx.ConnectError):
                err = ServerUnavailable(
                    f"cannot reach the Letta server at {url} ({what})",
                    hint="is it running? check base_url / LETTA_BASE_URL",
                )
            else:
                err = StreamInterrupted(f"connection to {url} broke ({what})")
        elif isinstance(exc, httpx.TransportError):
            err = StreamInterrupted(f"the stream from {url} broke ({what}): {type(exc).__name__}")
        else:
            err = ConfigurationError(f"{what} failed: {type(exc).__name__}: {exc}")
        err.args = (redact(str(err.args[0])), *err.args[1:])
        return err

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
            raise self._error(exc, what) from None

    # ---- streams -------------------------------------------------------------------------
    def _stream(self, open_fn: Callable[[], Any], what: str, run_id: str | None) -> ChunkStream:
        holder = ChunkStream(iter(()))
        holder._gen = self._iterate(open_fn, what, run_id, holder)
        return holder

    def _iterate(
        self, open_fn: Callable[[], Any], what: str, run_id: str | None, holder: ChunkStream
    ) -> Iterator[Chunk]:
        try:
            stream = open_fn()
        except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
            raise self._error(exc, what) from None
        holder._stream = stream
        convert = to_chunk
        try:
            for item in stream:
                yield convert(item)
        except APIStatusError as exc:
            if exc.status_code == 200:  # `event: error`: the run failed, the body says why
                yield _error_chunk(exc.body, run_id)
                return
            raise self._error(exc, what) from None
        except (APIConnectionError, httpx.TransportError) as exc:
            raise self._error(exc, what) from None
        except ValueError:  # a frame cut in half by a clean-looking EOF
            raise StreamInterrupted(f"the stream of {what} ended inside a frame") from None
        finally:
            stream.close()

    def start(
        self,
        agent_id: str,
        messages: list[dict[str, Any]],
        *,
        otid: str,
        background: bool = True,
        stream_tokens: bool = True,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream:
        """POST a message as a (background) stream; `otid` on every item, no SDK retry."""
        items = []
        for i, msg in enumerate(messages):
            item = dict(msg)
            item.setdefault("otid", otid if i == 0 else f"{otid}-{i}")
            items.append(item)
        read = timeout if timeout is not None else self.stream_timeout
        return self._stream(
            lambda: self._once.agents.messages.with_raw_response.create(
                agent_id,
                messages=items,  # type: ignore[arg-type]  # plain dicts, as the SDK sends them
                streaming=True,
                background=background,
                stream_tokens=stream_tokens,
                include_pings=include_pings,
                timeout=httpx.Timeout(read, connect=5.0),
            ).parse(to=Stream[object]),
            f"send to agent {agent_id}",
            None,
        )

    def resume(
        self,
        run_id: str,
        starting_after: int = 0,
        *,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream:
        """Stored frames of `run_id` after `starting_after`, then the live tail."""
        kw: dict[str, Any] = {"starting_after": starting_after, "include_pings": include_pings}
        if batch_size is not None:
            kw["batch_size"] = batch_size
        read = timeout if timeout is not None else self.stream_timeout
        return self._stream(
            lambda: self._client.runs.messages.with_raw_response.stream(
                run_id, timeout=httpx.Timeout(read, connect=5.0), **kw
            ).parse(to=Stream[object]),
            f"run {run_id}",
            run_id,
        )

    def approve(self, agent_id: str, approvals: list[dict[str, Any]], *, otid: str) -> ChunkStream:
        """Answer pending tool calls; the server starts a new run for the answer."""
        return self.start(agent_id, [{"type": "approval", "approvals": approvals}], otid=otid)

    # ---- REST ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._call(lambda: self._client.health(), "health check").__dict__)

    def list_agents(self, *, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"limit": limit}
        if name is not None:
            kw["name"] = name
        page = self._call(lambda: self._client.agents.list(**kw), "listing agents")
        return [_agent_row(a) for a in page.items]

    def resolve_agent(self, name_or_id: str) -> dict[str, Any]:
        if name_or_id.startswith("agent-"):
            agent = self._call(
                lambda: self._client.agents.retrieve(name_or_id), f"agent '{name_or_id}'"
            )
            return _agent_row(agent)
        found = [a for a in self.list_agents(name=name_or_id) if a["name"] == name_or_id]
        if found:
            return found[0]
        known = ", ".join(sorted(a["name"] for a in self.list_agents())[:20]) or "none"
        raise NotFound(f"unknown agent '{name_or_id}' (known: {known})")

    def create_agent(self, name: str, model: str = "letta_nb/demo", **kw: Any) -> dict[str, Any]:
        agent = self._call(
            lambda: self._client.agents.create(name=name, model=model, **kw),
            f"creating agent '{name}'",
        )
        return _agent_row(agent)

    def pending_approval(self, agent_id: str) -> list[dict[str, Any]]:
        """The complete pending tool calls (streamed argument deltas may be partial)."""
        agent = self._call(
            lambda: self._client.agents.retrieve(agent_id, include=["agent.pending_approval"]),
            f"agent {agent_id}",
        )
        pending = getattr(agent, "pending_approval", None)
        if pending is None:
            return []
        raw = _plain(pending) if isinstance(pending, BaseModel) else dict(pending)
        calls = raw.get("tool_calls") or raw.get("tool_call")
        if isinstance(calls, dict):
            calls = [calls]
        return [
            {
                "tool_call_id": c.get("tool_call_id"),
                "name": c.get("name"),
                "arguments": c.get("arguments") or "",
            }
            for c in calls or []
            if isinstance(c, dict)
        ]

    def cancel(self, agent_id: str, run_ids: list[str] | None) -> dict[str, str]:
        kw: dict[str, Any] = {"run_ids": run_ids} if run_ids else {}
        result = self._call(
            lambda: self._client.agents.messages.cancel(agent_id, **kw),
            f"cancel on agent {agent_id}",
        )
        return {str(k): str(v) for k, v in dict(result or {}).items()}

    def get_run(self, run_id: str) -> dict[str, Any]:
        run = self._call(lambda: self._client.runs.retrieve(run_id), f"run {run_id}")
        return run.model_dump(mode="json")

    def list_runs(
        self,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        statuses: list[str] | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]:
        """One page only: the real server's `after` cursor is broken, auto-pagination repeats."""
        kw: dict[str, Any] = {"limit": limit, "order": order}
        if agent_id is not None:
            kw["agent_id"] = agent_id
        if active is not None:
            kw["active"] = active
        if statuses:
            kw["statuses"] = statuses
        page = self._call(lambda: self._client.runs.list(**kw), "listing runs")
        return [r.model_dump(mode="json") for r in page.items]

    def run_usage(self, run_id: str) -> dict[str, Any]:
        usage = self._call(lambda: self._client.runs.usage.retrieve(run_id), f"run {run_id}")
        return usage.model_dump(mode="json")

    def run_messages(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        page = self._call(
            lambda: self._client.runs.messages.list(run_id, order="asc", limit=limit),
            f"run {run_id}",
        )
        return [m.model_dump(mode="json") for m in page.items]

    def run_steps(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        page = self._call(
            lambda: self._client.runs.steps.list(run_id, limit=limit), f"run {run_id}"
        )
        return [s.model_dump(mode="json") for s in page.items]

    def close(self) -> None:
        self._client.close()


def _agent_row(agent: Any) -> dict[str, Any]:
    created = getattr(agent, "created_at", None)
    model = getattr(agent, "model", None)
    if model is None:
        llm = getattr(agent, "llm_config", None)
        model = getattr(llm, "handle", None) or getattr(llm, "model", None)
    return {
        "id": agent.id,
        "name": agent.name,
        "model": model,
        "created_at": created.isoformat() if isinstance(created, datetime) else created,
    }
