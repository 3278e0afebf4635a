"""The only module that imports `letta_client`: SDK calls in, `Chunk`s and one-line errors out.

Works against any Letta server (Cloud, self-hosted, the embedded one): only public endpoints.
The SDK never retries (its retries would re-send POSTs: each retried send starts another run);
retries are decided here, in one place: idempotent REST calls retry with a bounded, jittered
backoff on broken connections, 429 (never sooner than its `Retry-After`) and 502-504;
`create_agent` looks the agent up by name before it tries again; a refused send is a
`RateLimited` with the server's `Retry-After` for its caller to honour; sends are never
retried here (every message item carries a client `otid`, and the run chain finds a broken
send's run by it). When nothing listens at the server's address,
`on_unreachable` (set by `connect()` for the embedded server) may relaunch it. Streams are read
as the SDK's `Stream[object]`: each frame arrives as its plain JSON dict (the SDK's SSE decoding and
error handling, without its per-frame pydantic union validation, which is about half of the
SDK's per-frame cost: see docs/benchmarks.md). Other SDK objects become plain dicts by reading
pydantic's `__dict__`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any, Literal

import httpx
from letta_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    DefaultHttpxClient,
    Letta,
    Stream,
)
from letta_client._streaming import ServerSentEvent
from pydantic import BaseModel

from .core.chunks import Chunk, new_otid
from .core.clock import SYSTEM, Clock, epoch
from .core.errors import (
    ConfigurationError,
    Conflict,
    ConversationBusy,
    Expired,
    LettaNbError,
    NotFound,
    PendingApproval,
    RateLimited,
    ServerUnavailable,
    StreamInterrupted,
    StreamTimeout,
    Unauthorized,
    Unreachable,
    retry_after_seconds,
)
from .core.secrets import mask, redact, register_secret
from .protocol import MessageType as MT

__all__ = ["Backend", "ChunkStream", "new_otid", "to_chunk"]

_PLAIN = frozenset({str, int, float, bool, type(None)})
#: HTTP statuses an idempotent call retries (busy, or a proxy in between failing).
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Largest page `GET /v1/runs/` serves; longer lists are paginated with `after`.
RUNS_PAGE = 1000


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


class _Frames(Stream[object]):
    """The SDK's stream of plain JSON frames, noting how the server ended the response.

    The SDK ends iteration quietly both at `[DONE]` and at an EOF, even one in the middle of a
    frame (it drops the partial event). Only `[DONE]` means the server finished the response:
    a body that brought bytes but no `[DONE]` was cut, however clean the EOF looked. (A body
    with no bytes at all is the embedded server's answer to a resume past a run's end.)
    """

    done = False
    received = False

    def _iter_events(self) -> Iterator[ServerSentEvent]:
        body = self._bytes()
        for sse in self._decoder.iter_bytes(body):
            if sse.data.startswith("[DONE]"):
                self.done = True
                _read_the_end(body)
            yield sse

    def _bytes(self) -> Iterator[bytes]:
        for piece in self.response.iter_bytes():
            if piece:
                self.received = True
            yield piece

    @property
    def cut(self) -> bool:
        return self.received and not self.done


def _read_the_end(body: Iterator[bytes]) -> None:
    """Read the body's end after `[DONE]` (the empty last chunk, normally already here).

    The SDK stops reading at `[DONE]` and closes the response; httpx then drops the connection,
    as the response was not read to its end, and the next request opens a new one: a TCP
    connect per run, a TLS handshake per run on Letta Cloud. Read to the end, the connection
    goes back to the pool. A server that goes on sending after `[DONE]` gets a few reads, then
    the connection is dropped as before."""
    with contextlib.suppress(httpx.HTTPError, OSError, ValueError):  # (a detach closed it)
        for _ in itertools.islice(body, 4):
            pass


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


#: As many idle connections kept as open: httpcore 1.0.9 closes an idle connection whenever the
#: pool holds more connections *in all* than `max_keepalive_connections` (encode/httpcore#1000),
#: and that close can hit a connection it just gave to a waiting request, which then hangs for
#: its read timeout (encode/httpcore#1110). With streams that keep their connection (see
#: `_read_the_end`) and a batch's threads, the SDK's 20 of 100 would trigger both. 512 covers
#: two batches at the largest concurrency, one connection per item thread.
POOL_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=512)


class Backend:
    """A connection to one Letta server (see docs/architecture.md, "Backend")."""

    #: Called when nothing listens at `base_url` (connection refused); it relaunches the
    #: server and returns the new base URL, or None if unchanged. Set by `connect()` for the
    #: embedded server; called at most once per `relaunch_interval`, never recursively.
    on_unreachable: Callable[[], str | None] | None = None
    relaunch_interval = 5.0
    #: Backoff between retries of an idempotent call (seconds, doubled per attempt, capped).
    retry_base = 0.2
    retry_cap = 2.0
    #: Retries after a refused connection: enough for a relaunched server to answer, short
    #: for a URL where nothing runs (one clear line after ~1 s).
    unreachable_retries = 2

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        stream_timeout: float = 90.0,
        max_retries: int = 6,
        clock: Clock = SYSTEM,
    ) -> None:
        register_secret(api_key)
        register_secret(os.environ.get("LETTA_API_KEY"))  # the SDK falls back to it
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.stream_timeout = stream_timeout
        #: Retries of an idempotent REST call (0: fail at the first broken connection).
        self.max_retries = max_retries
        self.clock = clock
        #: True when the server re-attaches a re-sent otid to its run (the embedded server).
        self.reattaches_otid = False
        self._client = Letta(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=0,  # retries are decided here (`_call`), never blindly by the SDK
            http_client=http_client or DefaultHttpxClient(limits=POOL_LIMITS),
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self._closed = threading.Event()  # ends retry waits at close()
        self._hook_lock = threading.Lock()
        self._hook_at: float | None = None
        self._in_hook = threading.local()

    def __repr__(self) -> str:
        return f"Backend({self.base_url!r}, api_key={mask(self._api_key)})"

    # ---- relaunch ------------------------------------------------------------------------
    def _unreachable(self) -> None:
        """Nothing listens at `base_url`: let `on_unreachable` relaunch the server (bounded).

        A relaunch that cannot work says so in one line (its own `LettaNbError`, e.g. with the
        server log's path); the caller's backoff and retries go on after a successful one.
        """
        hook = self.on_unreachable
        if hook is None or getattr(self._in_hook, "active", False):
            return
        with self._hook_lock:
            now = self.clock.monotonic()
            if self._hook_at is not None and now - self._hook_at < self.relaunch_interval:
                return  # relaunched just now (maybe by another reader): retry against it
            self._hook_at = now
            self._in_hook.active = True
            try:
                url = hook()
            except LettaNbError:
                raise
            except Exception as exc:
                raise ServerUnavailable(
                    f"relaunching the server at {self.base_url} failed: {type(exc).__name__}"
                ) from None
            finally:
                self._in_hook.active = False
        if url:
            self.use_base_url(url)

    def use_base_url(self, base_url: str) -> None:
        """Talk to `base_url` from now on (a relaunched server); open streams keep theirs."""
        url = base_url.rstrip("/")
        if url != self.base_url:
            self._client = self._client.with_options(base_url=url)
            self.base_url = url

    def _pause(self, attempt: int, at_least: float | None = None) -> None:
        delay = min(self.retry_cap, self.retry_base * (2 ** max(0, attempt - 1)))
        delay *= 0.5 + random.random() / 2
        if at_least is not None:  # the server said when (Retry-After): never sooner
            delay = max(delay, at_least)
        self.clock.wait(self._closed, delay)

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
                holder = body.get("run_id") if isinstance(body, dict) else None
                if (isinstance(inner, dict) and inner.get("code") == "PENDING_APPROVAL") or (
                    isinstance(inner, str) and "waiting for approval" in inner
                ):  # the agents endpoint's body, or Letta's conversation one (a string)
                    err = PendingApproval(
                        f"the agent is waiting for an approval ({what}): approve or deny the "
                        "pending tool call first"
                    )
                elif isinstance(holder, str) and holder:
                    err = ConversationBusy(
                        f"{what}: the conversation is busy with run {holder}", run_id=holder
                    )
                else:
                    err = Conflict(f"{what}: the server reported a conflict: {detail}")
            elif code == 429:
                headers = getattr(getattr(exc, "response", None), "headers", None) or {}
                err = RateLimited(
                    f"the Letta server at {url} is rate limiting requests ({what}, HTTP 429)",
                    retry_after=retry_after_seconds(headers.get("retry-after"), self.clock.time()),
                )
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
                err = Unreachable(
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

    def _call(self, fn: Callable[[], Any], what: str, *, idempotent: bool = True) -> Any:
        """Run one SDK call; an idempotent one is retried (bounded) when it may succeed later.

        Retried: a refused or broken connection, a read timeout (once), 429 and 502-504.
        Never retried: other HTTP errors (they would fail the same way) and non-idempotent
        calls (their caller decides: see `create_agent`).
        """
        attempt = timeouts = refused = 0
        while True:
            try:
                return fn()
            except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
                err = self._error(exc, what)
                status = exc.status_code if isinstance(exc, APIStatusError) else None
            retry = isinstance(err, StreamInterrupted) or status in _RETRY_STATUSES
            if isinstance(err, Unreachable):
                self._unreachable()
                refused += 1
                retry = refused <= self.unreachable_retries
            elif isinstance(err, StreamTimeout):
                timeouts += 1
                retry = timeouts <= 1  # each costs a whole read timeout
            if not (idempotent and retry) or attempt >= self.max_retries or self._closed.is_set():
                raise err
            attempt += 1
            self._pause(attempt, err.retry_after if isinstance(err, RateLimited) else None)

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
            err = self._error(exc, what)
            if isinstance(err, Unreachable):
                self._unreachable()  # the reader's own backoff retries the relaunched server
            raise err from None
        holder._stream = stream
        convert = to_chunk
        try:
            for item in stream:
                yield convert(item)
            if getattr(stream, "cut", False):
                raise StreamInterrupted(f"the stream of {what} ended before the server finished it")
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
        conversation_id: str | None = None,
        background: bool = True,
        stream_tokens: bool = True,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream:
        """POST a message as a (background) stream; `otid` on every item, no SDK retry.

        With `conversation_id` the message goes to that conversation (one run at a time:
        `ConversationBusy` names the run holding it; a re-sent otid re-attaches to its run).
        """
        items = []
        for i, msg in enumerate(messages):
            item = dict(msg)
            item.setdefault("otid", otid if i == 0 else f"{otid}-{i}")
            items.append(item)
        read = httpx.Timeout(timeout if timeout is not None else self.stream_timeout, connect=5.0)
        if conversation_id is not None:
            return self._stream(
                lambda: self._client.conversations.messages.with_raw_response.create(
                    conversation_id,
                    messages=items,  # type: ignore[arg-type]  # plain dicts, as the SDK sends
                    streaming=True,
                    background=background,
                    stream_tokens=stream_tokens,
                    include_pings=include_pings,
                    timeout=read,
                ).parse(to=_Frames),
                f"send to conversation {conversation_id}",
                None,
            )
        return self._stream(
            lambda: self._client.agents.messages.with_raw_response.create(
                agent_id,
                messages=items,  # type: ignore[arg-type]  # plain dicts, as the SDK sends them
                streaming=True,
                background=background,
                stream_tokens=stream_tokens,
                include_pings=include_pings,
                timeout=read,
            ).parse(to=_Frames),
            f"send to agent {agent_id}",
            None,
        )

    def resume_conversation(
        self,
        conversation_id: str,
        *,
        otid: str | None = None,
        run_id: str | None = None,
        starting_after: int = 0,
        batch_size: int | None = None,
        include_pings: bool = True,
        timeout: float | None = None,
    ) -> ChunkStream:
        """A conversation's run by `otid` (any otid of its send), by `run_id`, or its newest
        active run: stored frames after `starting_after`, then the live tail. `NotFound`
        when no run has that otid (the send never reached the server)."""
        kw: dict[str, Any] = {"starting_after": starting_after, "include_pings": include_pings}
        for key, value in (("otid", otid), ("run_id", run_id), ("batch_size", batch_size)):
            if value is not None:
                kw[key] = value
        read = timeout if timeout is not None else self.stream_timeout
        what = f"conversation {conversation_id}" + (f" (otid {otid})" if otid else "")
        return self._stream(
            lambda: self._client.conversations.messages.with_raw_response.stream(
                conversation_id, timeout=httpx.Timeout(read, connect=5.0), **kw
            ).parse(to=_Frames),
            what,
            run_id,
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
            ).parse(to=_Frames),
            f"run {run_id}",
            run_id,
        )

    def approve(
        self,
        agent_id: str,
        approvals: list[dict[str, Any]],
        *,
        otid: str,
        conversation_id: str | None = None,
    ) -> ChunkStream:
        """Answer pending tool calls (in `conversation_id` when the approval waits there); the
        server starts a new run for the answer."""
        return self.start(
            agent_id,
            [{"type": "approval", "approvals": approvals}],
            otid=otid,
            conversation_id=conversation_id,
        )

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
        """POST a new agent; never blindly retried: a create whose answer broke may have worked.

        After a broken answer the agent is looked up by name (created since the first try)
        before another create; a refused connection reached nobody and is simply retried.
        """
        what = f"creating agent '{name}'"
        started = self.clock.time()
        attempt = 0
        while True:
            try:
                agent = self._call(
                    lambda: self._client.agents.create(name=name, model=model, **kw),
                    what,
                    idempotent=False,
                )
                return _agent_row(agent)
            except Unreachable:
                if attempt >= min(self.max_retries, self.unreachable_retries):
                    raise
            except (StreamInterrupted, ServerUnavailable):
                if attempt >= self.max_retries:
                    raise
                made = [
                    a
                    for a in self.list_agents(name=name)
                    if a["name"] == name and epoch(a.get("created_at")) >= started - 5.0
                ]
                if made:
                    return made[0]
            attempt += 1
            self._pause(attempt)

    def pending_approval(
        self, agent_id: str, conversation_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The complete pending tool calls of the agent's default history, or of a
        conversation (streamed argument deltas may be partial)."""
        if conversation_id is not None:
            # what Letta offers for a conversation: its newest message is the request
            newest = self.conversation_messages(conversation_id, limit=5, order="desc")
            said = [m for m in newest if m.get("message_type") != "system_message"]
            if not said or said[0].get("message_type") != MT.APPROVAL_REQUEST:
                return []
            return _tool_calls(said[0])
        agent = self._call(
            lambda: self._client.agents.retrieve(agent_id, include=["agent.pending_approval"]),
            f"agent {agent_id}",
        )
        pending = getattr(agent, "pending_approval", None)
        if pending is None:
            return []
        raw = _plain(pending) if isinstance(pending, BaseModel) else dict(pending)
        if raw.get("conversation_id"):  # the embedded server names a conversation's here
            return []
        return _tool_calls(raw)

    def cancel(self, agent_id: str, run_ids: list[str] | None) -> dict[str, str]:
        kw: dict[str, Any] = {"run_ids": run_ids} if run_ids else {}
        result = self._call(
            lambda: self._client.agents.messages.cancel(agent_id, **kw),
            f"cancel on agent {agent_id}",
        )
        return {str(k): str(v) for k, v in dict(result or {}).items()}

    # ---- conversations -------------------------------------------------------------------
    def create_conversation(self, agent_id: str, *, summary: str | None = None) -> dict[str, Any]:
        """POST a new conversation of `agent_id`; never blindly retried (like `create_agent`):
        after a broken answer a named one is looked up by its summary (created since the first
        try) before another create. An unnamed one is created again (an empty one may stay)."""
        what = f"creating a conversation of agent {agent_id}"
        kw: dict[str, Any] = {"agent_id": agent_id}
        if summary is not None:
            kw["summary"] = summary
        started = self.clock.time()
        attempt = 0
        while True:
            try:
                made = self._call(
                    lambda: self._client.conversations.create(**kw), what, idempotent=False
                )
                return _conversation_row(made)
            except Unreachable:
                if attempt >= min(self.max_retries, self.unreachable_retries):
                    raise
            except (StreamInterrupted, ServerUnavailable):
                if attempt >= self.max_retries:
                    raise
                if summary is not None:
                    found = [
                        c
                        for c in self.list_conversations(agent_id, summary_search=summary)
                        if c["summary"] == summary and epoch(c.get("created_at")) >= started - 5.0
                    ]
                    if found:
                        return found[-1]  # the oldest new one: the first try's
            attempt += 1
            self._pause(attempt)

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        got = self._call(
            lambda: self._client.conversations.retrieve(conversation_id),
            f"conversation '{conversation_id}'",
        )
        return _conversation_row(got)

    def list_conversations(
        self,
        agent_id: str | None = None,
        *,
        summary_search: str | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]:
        """Up to `limit` conversations (newest first), in pages joined by id like runs."""
        kw: dict[str, Any] = {"order": order}
        if agent_id is not None:
            kw["agent_id"] = agent_id
        if summary_search:
            kw["summary_search"] = summary_search
        return self._pages(
            lambda page_kw: [_conversation_row(c) for c in self._conversations_page(page_kw)],
            kw,
            limit,
            "listing conversations",
        )

    def _conversations_page(self, kw: dict[str, Any]) -> Any:
        return self._client.conversations.list(**kw)

    def delete_conversation(self, conversation_id: str) -> None:
        self._call(
            lambda: self._client.conversations.delete(conversation_id),
            f"deleting conversation '{conversation_id}'",
        )

    def fork_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, Any]:
        """A new conversation sharing `conversation_id`'s messages (`default` + `agent_id`:
        the agent's default history). Not retried: each POST makes a fork."""
        kw: dict[str, Any] = {"agent_id": agent_id} if agent_id else {}
        made = self._call(
            lambda: self._client.conversations.fork(conversation_id, **kw),
            f"forking conversation '{conversation_id}'",
            idempotent=False,
        )
        return _conversation_row(made)

    def cancel_conversation(
        self, conversation_id: str, *, agent_id: str | None = None
    ) -> dict[str, str]:
        """Cancel a conversation's active runs; {} when nothing runs there (Letta's 409)."""
        kw: dict[str, Any] = {"agent_id": agent_id} if agent_id else {}
        try:
            result = self._call(
                lambda: self._client.conversations.cancel(conversation_id, **kw),
                f"cancel in conversation {conversation_id}",
            )
        except Conflict:
            return {}
        return {str(k): str(v) for k, v in dict(result or {}).items()}

    def conversation_messages(
        self, conversation_id: str, *, limit: int = 100, order: Literal["asc", "desc"] = "asc"
    ) -> list[dict[str, Any]]:
        page = self._call(
            lambda: self._client.conversations.messages.list(
                conversation_id, order=order, limit=limit
            ),
            f"conversation {conversation_id}",
        )
        return [m.model_dump(mode="json") for m in page.items]

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
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` runs (of one agent, of one conversation), in pages of at most
        `RUNS_PAGE`, each page retried on its own.

        Never the SDK's auto-pagination: the real server's `after` cursor is broken (returns
        the wrong side), so pages are joined by run id and a page with nothing new ends the
        list: no run twice, whatever a cut or a server does.
        """
        kw: dict[str, Any] = {"order": order}
        if agent_id is not None:
            kw["agent_id"] = agent_id
        if active is not None:
            kw["active"] = active
        if statuses:
            kw["statuses"] = statuses
        if conversation_id is not None:
            kw["conversation_id"] = conversation_id
        return self._pages(
            lambda page_kw: [
                r.model_dump(mode="json") for r in self._list_runs_page(page_kw).items
            ],
            kw,
            limit,
            "listing runs",
        )

    def _pages(
        self,
        fetch: Callable[[dict[str, Any]], list[dict[str, Any]]],
        kw: dict[str, Any],
        limit: int,
        what: str,
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows of a listing, page by page (each page retried by `_call`),
        joined by id: a page with nothing new ends it, so no row comes twice whatever a cut
        or a server's `after` cursor does."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        after: str | None = None
        while len(out) < limit:
            want = min(RUNS_PAGE, limit - len(out))
            page_kw: dict[str, Any] = {**kw, "limit": want}
            if after:
                page_kw["after"] = after
            rows = self._call(partial(fetch, page_kw), what)
            fresh = [r for r in rows if str(r.get("id")) not in seen]
            out.extend(fresh)
            seen.update(str(r.get("id")) for r in fresh)
            if len(rows) < want or not fresh:
                break
            after = str(rows[-1]["id"])
        return out[:limit]

    def _list_runs_page(self, kw: dict[str, Any]) -> Any:
        return self._client.runs.list(**kw)  # the current client: a relaunch may switch it

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
        self._closed.set()
        self._client.close()


def _tool_calls(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """An approval_request_message's calls (`tool_calls` list, or the one `tool_call`)."""
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


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _conversation_row(conv: Any) -> dict[str, Any]:
    """A `Conversation` as the plain row the session and frames use (ISO dates)."""
    return {
        "id": conv.id,
        "agent_id": conv.agent_id,
        "summary": getattr(conv, "summary", None),
        "created_at": _iso(getattr(conv, "created_at", None)),
        "updated_at": _iso(getattr(conv, "updated_at", None)),
        "last_message_at": _iso(getattr(conv, "last_message_at", None)),
    }


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
