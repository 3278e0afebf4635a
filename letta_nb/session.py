"""Sessions: where the server is, which agent is the default, which runs this kernel follows.

Re-running a cell must never start a second run: `send` looks its cursor up first. A finished
cursor is rendered from its cached transcript with no server call that could start a run; an
unfinished one is re-attached (the follower already reading it, a detached or errored one
revived from its own cursor, or a new one resuming from the cursor's seq). The cheap cursor
state is written on status changes and at most every ~2 s while streaming; the transcript
records only at settle points (approval, end, detach, error), with the seqs they reflect, so a
kernel that dies mid-run resumes from those seqs and re-reads the rest from the server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .core.approval import ApprovalState
from .core.cursor import Cursor, CursorStore, default_state_dir
from .core.errors import (
    ConfigurationError,
    LettaNbError,
    NotFound,
    ServerUnavailable,
    Unauthorized,
)
from .core.secrets import mask, register_secret
from .core.status import FINISHED, SETTLED
from .core.transcript import Transcript
from .follower import Follower, Policy
from .handle import RunHandle

#: Transcripts longer than this (characters) are not cached in the cursor store.
CACHE_CHARS = 1_000_000
#: Where a key without a base URL points, as in letta-client's default environment.
LETTA_CLOUD_URL = "https://api.letta.com"

DEMO_AGENT = "demo-analyst"
DEMO_MODEL = "letta_nb/demo"
PERSIST_EVERY = 2.0

_current: Session | None = None
_current_lock = threading.Lock()


class Session:
    """A Backend, its default agent, the cursor store and this kernel's followers."""

    #: Expected duration of a --no-background run; its client timeout is 1.5× this.
    expected_duration = 120.0
    stall_after = 60.0

    def __init__(
        self,
        backend: Any,
        *,
        agent: dict[str, Any] | None = None,
        store: CursorStore | None = None,
        server: Any = None,
    ) -> None:
        self.backend = backend
        self.store = store if store is not None else CursorStore()
        self.server = server  # an in-process server kept alive with the session
        self.agent = agent
        self._agents: dict[str, dict[str, Any]] = {}
        self._followers: dict[str, Follower] = {}  # run id → follower
        self._keys: dict[int, str] = {}  # id(follower) → cursor key
        self._by_key: dict[str, Follower] = {}
        self._lock = threading.RLock()
        if agent:
            self._remember(agent)

    def __repr__(self) -> str:
        key = mask(getattr(self.backend, "_api_key", None))
        agent = self.agent["name"] if self.agent else None
        return f"<letta_nb Session {self.backend.base_url} api_key={key} agent={agent}>"

    # ---- agents --------------------------------------------------------------------------
    def _remember(self, agent: dict[str, Any]) -> dict[str, Any]:
        self._agents[agent["id"]] = agent
        self._agents[agent["name"]] = agent
        return agent

    def resolve(self, agent: str | dict[str, Any] | None = None) -> dict[str, Any]:
        """Agent name or id (or None for the default) → agent row; cached per session."""
        if isinstance(agent, dict):
            return agent
        if agent is None:
            if self.agent is None:
                raise ConfigurationError("no default agent: pass agent= or use `%letta agent NAME`")
            return self.agent
        found = self._agents.get(agent)
        if found is None:
            found = self._remember(self.backend.resolve_agent(agent))
        return found

    def agent_name(self, agent_id: str) -> str | None:
        row = self._agents.get(agent_id)
        return row["name"] if row else None

    def use_agent(self, agent: str) -> dict[str, Any]:
        """Make `agent` the default for sends without agent=."""
        self.agent = self.resolve(agent)
        return self.agent

    def agents(self) -> list[dict[str, Any]]:
        return self.backend.list_agents()

    def ensure_agent(self, name: str = DEMO_AGENT, model: str = DEMO_MODEL) -> dict[str, Any]:
        try:
            return self._remember(self.backend.resolve_agent(name))
        except NotFound:
            pass
        return self._remember(self.backend.create_agent(name, model=model))

    # ---- sending -------------------------------------------------------------------------
    def send(
        self,
        message: str,
        agent: str | dict[str, Any] | None = None,
        *,
        key: str | None = None,
        new: bool = False,
        background: bool = True,
        wait: bool = False,
        timeout: float | None = None,
        policy: str | Policy | None = None,
    ) -> RunHandle:
        """Send `message` (or re-attach the cell's run: see the module doc)."""
        if policy not in (None, "approve", "deny") and not callable(policy):
            raise ConfigurationError(
                f"policy must be 'approve', 'deny' or a callable, not {policy!r}"
            )
        row = self.resolve(agent)
        agent_id = row["id"]
        if key is None:
            digest = hashlib.sha256(f"{agent_id}\0{message.strip()}".encode()).hexdigest()[:24]
            key = f"py:{digest}"
        handle = None if new else self._reattach(key, agent_id, policy)
        if handle is None:
            handle = self._start(
                key, row, message, background=background, timeout=timeout, policy=policy
            )
        if wait:
            handle.wait(timeout)
        return handle

    def _reattach(self, key: str, agent_id: str, policy: Any) -> RunHandle | None:
        with self._lock:
            live = self._by_key.get(key)
            if live is not None and live.agent_id == agent_id:
                if policy is not None:
                    live.policy = policy
                live.resume()  # detached/errored: continue from its cursor
                return RunHandle(self, live, key)
            cur = self.store.get(key)
            if cur is None or cur.agent_id != agent_id or cur.run_id is None:
                return None
            live = self._followers.get(cur.run_id)
            if live is not None:
                live.resume()
                return RunHandle(self, live, key)
            seqs = cur.resume_seqs  # the records' own seqs: newer `seqs` would skip frames
            transcript = Transcript.from_records(cur.records, seqs)
            for rid in cur.runs:  # keep the chain's run order even for runs with no entries
                transcript.tracker(rid)
            for rid in cur.runs[:-1]:  # earlier runs the records do not cover: replay them
                self._replay(transcript, rid, cur.seqs.get(rid, 0))
            follower = self._new_follower(agent_id, transcript, policy)
            done = cur.status in FINISHED and cur.records_current
            if done:
                self._restore(follower, cur)
            self._register(key, follower, cur)
            if not done:
                follower.follow(cur.run_id, starting_after=seqs.get(cur.run_id, 0))
            return RunHandle(self, follower, key)

    def _replay(self, transcript: Transcript, run_id: str, end: int) -> None:
        """Read a finished run of the chain up to `end` into `transcript` (never past it: a
        real server hangs there)."""
        if transcript.last_seq(run_id) >= end:
            return
        transcript.begin_stream(run_id, transcript.last_seq(run_id))
        stream = self.backend.resume(run_id, transcript.last_seq(run_id), include_pings=False)
        try:
            for chunk in stream:
                transcript.apply(chunk, run_id)
                if transcript.last_seq(run_id) >= end:
                    break
        finally:
            stream.close()

    def _restore(self, follower: Follower, cur: Cursor) -> None:
        """A finished cursor: the follower shows it, no thread, no server call."""
        follower._run_id = cur.run_id
        follower.status = cur.status
        follower.started_at = follower.ended_at = cur.updated_at
        follower._settled.set()
        if cur.status == "requires_approval" and cur.run_id:
            follower.approval = ApprovalState(cur.run_id, follower.transcript.pending_tool_calls())

    def _start(
        self,
        key: str,
        agent: dict[str, Any],
        message: str,
        *,
        background: bool,
        timeout: float | None,
        policy: Any,
    ) -> RunHandle:
        follower = self._new_follower(agent["id"], Transcript(), policy)
        cur = Cursor(key=key, agent_id=agent["id"], message=message, status="starting")
        with self._lock:
            self._register(key, follower, cur)
        client_timeout = None
        if not background:  # no resume possible: pings + 1.5× the expected duration
            client_timeout = 1.5 * (timeout if timeout is not None else self.expected_duration)
        follower.start(
            [{"role": "user", "content": message}], background=background, timeout=client_timeout
        )
        return RunHandle(self, follower, key)

    def attach(
        self,
        run_id: str,
        starting_after: int = 0,
        *,
        agent: str | dict[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> RunHandle:
        """Follow any existing run (one follower per run per kernel).

        A run this kernel already follows keeps its follower; a detached or errored one
        continues from its own cursor (`starting_after` is ignored then: the follower knows
        exactly what it has, so nothing is skipped or read twice).
        """
        with self._lock:
            live = self._followers.get(run_id)
            if live is not None:
                if batch_size is not None:
                    live.batch_size = batch_size
                live.resume()
                return RunHandle(self, live, self._keys.get(id(live), f"run:{run_id}"))
        if agent is None:
            agent_id = self.backend.get_run(run_id).get("agent_id")
            if not agent_id:
                raise ConfigurationError(f"run {run_id} names no agent; pass agent=")
        else:
            agent_id = self.resolve(agent)["id"]
        key = f"run:{run_id}"
        follower = self._new_follower(agent_id, Transcript(), None)
        cur = Cursor(key=key, agent_id=agent_id, runs=[run_id], status="running")
        with self._lock:
            self._register(key, follower, cur)
        follower.follow(run_id, starting_after=starting_after, batch_size=batch_size)
        return RunHandle(self, follower, key)

    def follower_for(self, run_id: str) -> Follower | None:
        return self._followers.get(run_id)

    # ---- followers and cursors -----------------------------------------------------------
    def _new_follower(self, agent_id: str, transcript: Transcript, policy: Any) -> Follower:
        return Follower(
            self.backend,
            agent_id=agent_id,
            transcript=transcript,
            stall_after=self.stall_after,
            policy=policy,
        )

    def _register(self, key: str, follower: Follower, cur: Cursor) -> None:
        self._by_key[key] = follower
        self._keys[id(follower)] = key
        for rid in cur.runs:
            self._followers[rid] = follower
        state: dict[str, Any] = {"last": 0.0, "status": None, "runs": 0}
        message = cur.message

        def persist(f: Follower) -> None:
            runs = f.transcript.runs
            status = f.status
            changed = status != state["status"] or len(runs) != state["runs"]
            now = time.monotonic()
            if not changed and now - state["last"] < PERSIST_EVERY:
                return
            first = state["status"] is None  # a new chain: never inherit old records
            state.update(last=now, status=status, runs=len(runs))
            for rid in runs:
                self._followers.setdefault(rid, f)
            # Records (O(transcript)) only at settle points, and only from a consistent
            # snapshot; otherwise the cheap state, and the stored records keep their seqs.
            settle = changed and (first or status in SETTLED) and f.quiescent
            self.store.put(self._cursor(key, f, message, records=settle), records=settle)

        follower.add_listener(persist)
        persist(follower)

    def _cursor(self, key: str, f: Follower, message: str = "", *, records: bool = True) -> Cursor:
        tr = f.transcript
        stop = tr.stop_reason
        seqs = tr.seq_state()
        if records and sum(len(e.text) for e in tr.entries) > CACHE_CHARS:
            # Too big to be worth a copy (encoding it doubles the kernel's memory for a
            # moment): no cached records, and a rebuild replays the chain from the server.
            return Cursor(
                key=key,
                agent_id=f.agent_id,
                runs=list(tr.runs),
                seqs=seqs,
                status=f.status,
                stop_reason=stop,
                records=[],
                message=message,
                record_seqs={},
            )
        return Cursor(
            key=key,
            agent_id=f.agent_id,
            runs=list(tr.runs),
            seqs=seqs,
            status=f.status,
            stop_reason=stop,
            records=tr.to_records() if records else [],
            message=message,
            record_seqs=dict(seqs) if records else None,
        )

    def cursor_of(self, handle: RunHandle) -> Cursor:
        """The handle's cursor as it is now (the stored one may lag by up to ~2 s)."""
        stored = self.store.get(handle.key, records=False)
        message = stored.message if stored else ""
        return self._cursor(handle.key, handle.follower, message)

    def followers(self) -> list[Follower]:
        """Every run chain this kernel follows (one follower per chain), oldest first."""
        return list(dict.fromkeys(self._followers.values()))

    def runs(self, **kw: Any) -> list[dict[str, Any]]:
        return self.backend.list_runs(**kw)

    def close(self) -> None:
        """Detach every live follower and release the connection (runs go on)."""
        for f in set(self._by_key.values()):
            if f.status not in SETTLED:
                f.detach()
        self.backend.close()
        if self.server is not None and hasattr(self.server, "stop"):
            self.server.stop()
        self.store.close()


# ---- connection resolution -----------------------------------------------------------------
class _Relauncher:
    """``Backend.on_unreachable`` of an embedded session: ensure the state dir's server runs
    again (the same port and token when possible) and return its base URL, or None with the
    one-line reason in ``last_error`` when it cannot be started."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.last_error: str | None = None

    def __call__(self) -> str | None:
        from .server.launcher import ServerStartError, ensure_server

        try:
            url = ensure_server(self.state).base_url
        except (ServerStartError, OSError) as exc:
            self.last_error = str(exc)
            return None
        self.last_error = None
        return url


def _embedded() -> tuple[str, str, _Relauncher]:
    """The state dir's detached server (started once under a file lock, always with a token)
    and its demo agent, created under the same lock so kernels connecting at once share one.
    A server that cannot start is one line naming its log; there is no fallback."""
    from .backend import Backend
    from .server.launcher import ServerStartError, ensure_server, state_lock

    state = default_state_dir() / "server"
    try:
        with state_lock(state):
            info = ensure_server(state)
            backend = Backend(info.base_url, info.token, max_retries=0)  # create: never twice
            try:
                try:
                    backend.resolve_agent(DEMO_AGENT)
                except NotFound:
                    backend.create_agent(DEMO_AGENT, model=DEMO_MODEL)
            finally:
                backend.close()
    except ServerStartError as exc:
        raise ServerUnavailable(str(exc)) from None
    return info.base_url, info.token, _Relauncher(state)


def connect(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    agent: str | None = None,
    backend_factory: Callable[..., Any] | None = None,
) -> Session:
    """Explicit args → LETTA_BASE_URL / LETTA_API_KEY → the embedded server with a demo agent."""
    from .backend import Backend

    global _current
    api_key = api_key or os.environ.get("LETTA_API_KEY") or None
    register_secret(api_key)
    base_url = base_url or os.environ.get("LETTA_BASE_URL") or None
    if base_url is None and api_key:
        base_url = LETTA_CLOUD_URL  # a key alone means Letta Cloud, never the embedded server
    embedded = base_url is None
    relaunch = None
    if embedded:
        base_url, api_key, relaunch = _embedded()  # the server's token is the API key
    assert base_url is not None
    backend = (backend_factory or Backend)(base_url, api_key)
    backend.reattaches_otid = embedded
    if relaunch is not None:
        backend.on_unreachable = relaunch
    session = Session(backend)
    try:
        if agent is not None:
            session.use_agent(agent)
        else:
            session.agent = session.ensure_agent()
    except (ServerUnavailable, Unauthorized):
        session.close()
        raise  # a dead URL or a refused key must not become the current session
    except LettaNbError:
        if agent is not None or embedded:
            session.close()
            raise
        session.agent = None  # a remote server without the demo model: pick one later
    with _current_lock:
        _current = session
    return session


def current() -> Session:
    """This kernel's session, connecting (env or embedded server) on first use."""
    global _current
    with _current_lock:
        session = _current
    return session if session is not None else connect()
