"""Sessions: where the server is, which agent is the default, which runs this kernel follows.

Conversations: a send may go to one of the agent's conversations (`conversation=`: a NAME,
created if missing, `"new"`, an id, or `"default"` for the agent's own history); a session may
be bound to one (`use_conversation`, `%letta connect --conversation`), which its sends without
`conversation=` then use. The cursor remembers the chain's conversation and its send's otid.

Re-running a cell must never start a second run: `send` looks its cursor up first. A finished
cursor is rendered from its cached transcript with no server call that could start a run; an
unfinished one is re-attached (the follower already reading it, a detached or errored one
revived from its own cursor, or a new one resuming from the cursor's seq). The cheap cursor
state is written on status changes and at most every ~2 s while streaming; the transcript
records only at settle points (approval, end, detach, error), with the seqs they reflect, so a
kernel that dies mid-run resumes from those seqs and re-reads the rest from the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .core.chunks import new_otid
from .core.cursor import Cursor, CursorStore, default_state_dir
from .core.errors import (
    ConfigurationError,
    LettaNbError,
    NotFound,
)
from .core.secrets import mask
from .core.status import FINISHED, SETTLED, ChainStatus
from .core.transcript import Transcript
from .handle import RunHandle
from .protocol import FINAL_RUN_STATUSES
from .run import Follower, FrameLog, Policy, RunEnd, replay, run_seconds, stored_frames

if TYPE_CHECKING:
    import pandas as pd

    from ._protocols import LettaBackend
    from .batch import Batch

log = logging.getLogger("letta_nb")

#: Transcripts longer than this (characters) are not cached in the cursor store.
CACHE_CHARS = 1_000_000

#: Conversation specs: the agent's own history, and a fresh conversation.
DEFAULT_HISTORY = "default"
NEW_CONVERSATION = "new"
DEMO_AGENT = "demo-analyst"
DEMO_MODEL = "letta_nb/demo"
PERSIST_EVERY = 2.0


class Session:
    """A Backend, its default agent, the cursor store and this kernel's followers."""

    #: Expected duration of a --no-background run; its client timeout is 1.5× this.
    expected_duration = 120.0
    stall_after = 60.0

    def __init__(
        self,
        backend: LettaBackend,
        *,
        agent: dict[str, Any] | None = None,
        store: CursorStore | None = None,
        server: Any = None,
    ) -> None:
        self.backend = backend
        self.store = store if store is not None else CursorStore()
        self.server = server  # an in-process server kept alive with the session
        self.agent = agent
        #: The conversation this session's sends use by default (None: each agent's default
        #: history); see `use_conversation`. It applies to sends to its own agent only.
        self.conversation: dict[str, Any] | None = None
        self._conversations: dict[tuple[str, str], dict[str, Any]] = {}  # (agent, name) -> row
        self._seen: dict[str, dict[str, Any]] = {}  # conversation id -> row (for labels)
        self._agents: dict[str, dict[str, Any]] = {}
        self._followers: dict[str, Follower] = {}  # run id → follower
        self._keys: dict[int, str] = {}  # id(follower) → cursor key
        self._by_key: dict[str, Follower] = {}
        self._batches: dict[str, Batch] = {}  # batch key → this kernel's batch
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
        """The agent called `name`, created if the server has none.

        Kernels of this machine do this one at a time per server (a lock file in the state
        dir): N kernels connecting at once find one agent, never create N.
        """
        with _agent_lock(self.backend.base_url, name):
            try:
                return self._remember(self.backend.resolve_agent(name))
            except NotFound:
                pass
            return self._remember(self.backend.create_agent(name, model=model))

    # ---- conversations -------------------------------------------------------------------
    def resolve_conversation(
        self, spec: str, agent: str | dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """A conversation spec → its row (None for `"default"`: the agent's own history).

        `"new"`: a fresh conversation of the agent. `conv-…`: that conversation (it must be
        the agent's). Anything else is a NAME: the agent's conversation whose summary is NAME
        (the oldest, if several), created if it has none; kernels of this machine look it up
        one at a time per (server, agent, NAME), so they find one, never create several.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigurationError(
                f"conversation must be a name, 'new', 'default' or a conv- id, not {spec!r}"
            )
        spec = spec.strip()
        if spec == DEFAULT_HISTORY:
            return None
        if spec.startswith("conv-"):
            try:
                conv = self.backend.get_conversation(spec)
            except NotFound:
                raise NotFound(f"unknown conversation '{spec}'") from None
            if agent is not None and conv["agent_id"] != self.resolve(agent)["id"]:
                raise ConfigurationError(
                    f"conversation {spec} belongs to agent {conv['agent_id']}, not to "
                    f"{self.resolve(agent)['name']}"
                )
            return self._remember_conversation(conv)
        row = self.resolve(agent)
        if spec == NEW_CONVERSATION:
            return self._remember_conversation(self.backend.create_conversation(row["id"]))
        cached = self._conversations.get((row["id"], spec))
        if cached is not None:
            return cached
        with _agent_lock(self.backend.base_url, f"conversation\0{row['id']}\0{spec}"):
            found = [
                c
                for c in self.backend.list_conversations(row["id"], summary_search=spec)
                if c.get("summary") == spec
            ]
            conv = found[-1] if found else self.backend.create_conversation(row["id"], summary=spec)
        self._conversations[(row["id"], spec)] = conv
        return self._remember_conversation(conv)

    def _remember_conversation(self, conv: dict[str, Any] | None) -> dict[str, Any] | None:
        if conv is not None:
            self._seen[conv["id"]] = conv
        return conv

    def conversation_label(self, conversation_id: str | None) -> str | None:
        """How views name a chain's conversation: its summary, else its short id (no server
        call: conversations this session resolved or created are known)."""
        if not conversation_id:
            return None
        row = self._seen.get(conversation_id)
        if row and row.get("summary"):
            return str(row["summary"])
        return conversation_id[:13]  # "conv-" + 8 hex digits

    def use_conversation(
        self,
        spec: str | None,
        agent: str | dict[str, Any] | None = None,
        *,
        notebook: str | None = None,
    ) -> dict[str, Any] | None:
        """Bind this session's sends (to the conversation's agent) to one conversation.

        `"new"` binds to *this notebook's own* conversation: created the first time, the same
        one when the cell is re-run, and (in JupyterLab, which names the notebook) after a
        kernel restart; two notebooks on one agent never share it. A NAME or an id binds to
        that conversation; None or `"default"` unbinds (sends go to the agent's own history).
        `notebook`: the notebook's path (default: `JPY_SESSION_NAME`, which Jupyter sets).
        """
        if spec is None or spec == DEFAULT_HISTORY:
            self.conversation = None
            return None
        conv: dict[str, Any] | None
        if spec == NEW_CONVERSATION:
            where = notebook or os.environ.get("JPY_SESSION_NAME") or None
            conv = self._notebook_conversation(self.resolve(agent), where)
        else:
            conv = self.resolve_conversation(spec, agent)
        self.conversation = conv
        if conv is not None and spec.startswith("conv-"):
            self.agent = self.resolve(conv["agent_id"])  # an id names its agent too
        return conv

    def _notebook_conversation(self, agent: dict[str, Any], notebook: str | None) -> dict[str, Any]:
        where = notebook or f"kernel {os.getpid()}"
        key = f"bind:{self.backend.base_url}:{agent['id']}:{where}"
        bound = self.store.get(key, records=False)
        if bound is not None and bound.conversation_id:
            try:
                again = self.backend.get_conversation(bound.conversation_id)
                return self._remember_conversation(again) or again
            except NotFound:
                pass  # deleted since: make another one
        label = f"notebook {os.path.basename(notebook)}" if notebook else None
        conv = self.backend.create_conversation(agent["id"], summary=label)
        self._remember_conversation(conv)
        self.store.put(
            Cursor(key=key, agent_id=agent["id"], conversation_id=conv["id"], status="bound"),
            persist=notebook is not None,  # without a notebook name a kernel is all there is
        )
        return conv

    def conversations(self, agent: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The agent's (default: the session's) conversations, newest first."""
        return self.backend.list_conversations(self.resolve(agent)["id"], limit=limit)

    def _conversation_for(
        self, conversation: str | None, agent: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(the spec a send uses, its resolved row) — `"new"` is resolved only when sent."""
        if conversation is None:
            bound = self.conversation
            if bound is not None and bound["agent_id"] == agent["id"]:
                return bound["id"], bound
            return None, None
        if conversation == NEW_CONVERSATION:
            return NEW_CONVERSATION, None
        conv = self.resolve_conversation(conversation, agent)
        return (conv["id"], conv) if conv is not None else (None, None)

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
        conversation: str | None = None,
        otid: str | None = None,
    ) -> RunHandle:
        """Send `message` (or re-attach the cell's run: see the module doc).

        `conversation`: a NAME (created if missing), `"new"`, a `conv-…` id, or `"default"`
        (the agent's own history); None: the session's bound conversation, else the default
        history. `otid`: the message's client id (default: a fresh one); the same otid sent
        again re-attaches to the run it started (conversations: on every server; the
        embedded server also on the agents endpoint), so a caller that re-sends after a crash
        with the same otid never starts a second run. The cursor key defaults to the otid,
        else to agent + conversation + text.
        """
        if policy not in (None, "approve", "deny") and not callable(policy):
            raise ConfigurationError(
                f"policy must be 'approve', 'deny' or a callable, not {policy!r}"
            )
        if otid is not None and (not isinstance(otid, str) or not otid.strip()):
            raise ConfigurationError(f"otid must be a non-empty string, not {otid!r}")
        if agent is None and isinstance(conversation, str) and conversation.startswith("conv-"):
            named = self.resolve_conversation(conversation)
            agent = named["agent_id"] if named else None  # an id names its agent too
        row = self.resolve(agent)
        agent_id = row["id"]
        spec, conv = self._conversation_for(conversation, row)
        if key is None:
            if otid is not None:
                key = f"otid:{agent_id}:{otid}"
            else:
                where = "" if spec is None else f"\0{spec}"
                text = f"{agent_id}{where}\0{message.strip()}"
                key = f"py:{hashlib.sha256(text.encode()).hexdigest()[:24]}"
        handle = None if new else self._reattach(key, agent_id, policy, spec)
        if handle is None:
            earlier = None if new else self.store.get(key, records=False)
            if earlier is not None and earlier.run_id is None and earlier.agent_id == agent_id:
                # sent before its run was named (a crash, a restart): the same otid again,
                # into the same conversation, so a server that has the run re-attaches
                otid = otid or earlier.otid
                if spec == NEW_CONVERSATION and earlier.conversation_id:
                    spec, conv = earlier.conversation_id, None
            created = None
            if spec == NEW_CONVERSATION:
                conv = self.backend.create_conversation(agent_id)
                self._remember_conversation(conv)
                spec = created = conv["id"]
            handle = self._start(
                key,
                row,
                message,
                background=background,
                timeout=timeout,
                policy=policy,
                conversation_id=spec,
                otid=otid,
                fresh_conversation=created is not None and otid is not None,
            )
        if wait:
            handle.wait(timeout)
        return handle

    def _moved(self, old: str, new: str) -> None:
        """A re-sent otid's run lives in conversation `new`: the one made for it is unused."""
        with contextlib.suppress(LettaNbError):
            self.backend.delete_conversation(old)
        self._seen.pop(old, None)

    def _reattach(
        self,
        key: str,
        agent_id: str,
        policy: str | Policy | None,
        conversation: str | None = None,
    ) -> RunHandle | None:
        """The key's chain, if it is this agent's and in this conversation (`"new"`: any)."""

        def same_place(found: str | None) -> bool:
            return conversation == NEW_CONVERSATION or found == conversation

        with self._lock:
            live = self._by_key.get(key)
            if live is not None and live.agent_id == agent_id and same_place(live.conversation_id):
                if policy is not None:
                    live.policy = policy
                live.resume()  # detached/errored: continue from its cursor
                return RunHandle(self, live, key)
            cur = self.store.get(key)
            if (
                cur is None
                or cur.agent_id != agent_id
                or cur.run_id is None
                or not same_place(cur.conversation_id)
            ):
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
            # A finished chain (or one whose server lacks frames: re-reading cannot complete
            # it) is shown from its cursor; anything else resumes from the records' seqs.
            settled = cur.status in FINISHED or cur.status == ChainStatus.INCOMPLETE
            if settled and cur.records_current:
                follower = Follower.restored(
                    self.backend,
                    agent_id=agent_id,
                    transcript=transcript,
                    status=cur.status,
                    run_id=cur.run_id,
                    ended_at=cur.updated_at,
                    active_seconds=cur.active_seconds,
                    notice=cur.notice,
                    policy=policy,
                    stall_after=self.stall_after,
                    conversation_id=cur.conversation_id,
                )
                self._register(key, follower, cur)
                return RunHandle(self, follower, key)
            follower = self._new_follower(agent_id, transcript, policy, cur.conversation_id)
            follower.active_base = cur.active_seconds  # the time before the kernel restarted
            self._register(key, follower, cur)
            follower.follow(cur.run_id, starting_after=seqs.get(cur.run_id, 0))
            return RunHandle(self, follower, key)

    def _replay(self, transcript: Transcript, run_id: str, end: int) -> None:
        """Read a finished run of the chain up to `end` into `transcript` (never past it: a
        real server hangs there); resumed after cuts like every read."""
        replay(self.backend, run_id, transcript, RunEnd(), until=end, include_pings=False)

    def _start(
        self,
        key: str,
        agent: dict[str, Any],
        message: str,
        *,
        background: bool,
        timeout: float | None,
        policy: str | Policy | None,
        conversation_id: str | None = None,
        otid: str | None = None,
        fresh_conversation: bool = False,
    ) -> RunHandle:
        follower = self._new_follower(agent["id"], Transcript(), policy, conversation_id)
        if fresh_conversation:  # a caller's otid in a conversation just made for it: its
            follower.confirm_conversation = True  # run may already live in an earlier one
            follower.on_moved = self._moved
        otid = otid or new_otid()
        cur = Cursor(
            key=key,
            agent_id=agent["id"],
            message=message,
            status=ChainStatus.STARTING,
            conversation_id=conversation_id,
            otid=otid,
        )
        with self._lock:
            self._register(key, follower, cur)  # stored before the send: a crash re-sends it
        client_timeout = None
        if not background:  # no resume possible: pings + 1.5× the expected duration
            client_timeout = 1.5 * (timeout if timeout is not None else self.expected_duration)
        follower.start(
            [{"role": "user", "content": message}],
            otid=otid,
            background=background,
            timeout=client_timeout,
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
            run = self.backend.get_run(run_id)
            agent_id = run.get("agent_id")
            if not agent_id:
                raise ConfigurationError(f"run {run_id} names no agent; pass agent=")
        else:
            agent_id = self.resolve(agent)["id"]
            try:
                run = self.backend.get_run(run_id)
            except LettaNbError:
                run = {}  # the follower says why, in one line, as for any read
        conversation_id = run.get("conversation_id") or None  # its approvals are answered there
        key = f"run:{run_id}"
        follower = self._new_follower(agent_id, Transcript(), None, conversation_id)
        # its time so far is the server's (not since this attach): the views show that
        follower.active_base = run_seconds(run, follower.clock.time()) or 0.0
        cur = Cursor(
            key=key,
            agent_id=agent_id,
            runs=[run_id],
            status=ChainStatus.RUNNING,
            conversation_id=conversation_id,
        )
        with self._lock:
            self._register(key, follower, cur)
        follower.follow(run_id, starting_after=starting_after, batch_size=batch_size)
        return RunHandle(self, follower, key)

    def follower_for(self, run_id: str) -> Follower | None:
        return self._followers.get(run_id)

    # ---- batches -------------------------------------------------------------------------
    def map(
        self,
        items: Any,
        template: str | None = None,
        *,
        agent: str | dict[str, Any] | None = None,
        concurrency: int = 4,
        key: str | None = None,
        policy: str | Policy | None = None,
        timeout: float | None = None,
    ) -> Batch:
        """One background run per item, at most `concurrency` at a time (`letta_nb.map`)."""
        from .batch import open_batch

        return open_batch(
            self,
            items,
            template,
            agent=agent,
            concurrency=concurrency,
            key=key,
            policy=policy,
            timeout=timeout,
        )

    def batch(self, key: str) -> Batch | None:
        """This kernel's batch with that key, if it runs one."""
        return self._batches.get(key)

    def add_batch(self, batch: Batch) -> None:
        with self._lock:
            self._batches[batch.key] = batch

    def batches(self) -> list[Batch]:
        """This kernel's batches, oldest first."""
        return list(self._batches.values())

    # ---- followers and cursors -----------------------------------------------------------
    def _new_follower(
        self,
        agent_id: str,
        transcript: Transcript,
        policy: str | Policy | None,
        conversation_id: str | None = None,
    ) -> Follower:
        return Follower(
            self.backend,
            agent_id=agent_id,
            transcript=transcript,
            stall_after=self.stall_after,
            policy=policy,
            conversation_id=conversation_id,
        )

    def _register(self, key: str, follower: Follower, cur: Cursor) -> None:
        self._by_key[key] = follower
        self._keys[id(follower)] = key
        for rid in cur.runs:
            self._followers[rid] = follower
        state: dict[str, Any] = {"last": 0.0, "status": None, "runs": 0}
        message, otid = cur.message, cur.otid

        def persist(f: Follower) -> None:  # the store reports its own disk problems
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
            self.store.put(self._cursor(key, f, message, records=settle, otid=otid), records=settle)

        follower.add_listener(persist)
        persist(follower)

    def _cursor(
        self,
        key: str,
        f: Follower,
        message: str = "",
        *,
        records: bool = True,
        otid: str | None = None,
    ) -> Cursor:
        tr = f.transcript
        seqs = tr.seq_state()
        keep: dict[str, int] | None = dict(seqs) if records else None
        if records and sum(len(e.text) for e in tr.entries) > CACHE_CHARS:
            # Too big to be worth a copy (encoding it doubles the kernel's memory for a
            # moment): no cached records, and a rebuild replays the chain from the server.
            records, keep = False, {}
        return Cursor(
            key=key,
            agent_id=f.agent_id,
            runs=list(tr.runs),
            seqs=seqs,
            status=f.status,
            stop_reason=tr.stop_reason,
            records=tr.to_records() if records else [],
            message=message,
            record_seqs=keep,
            active_seconds=round(f.active_seconds, 3),
            notice=f.notice,
            conversation_id=f.conversation_id,
            otid=otid,
        )

    def cursor_of(self, handle: RunHandle) -> Cursor:
        """The handle's cursor as it is now (the stored one may lag by up to ~2 s)."""
        stored = self.store.get(handle.key, records=False)
        message = stored.message if stored else ""
        return self._cursor(
            handle.key, handle.follower, message, otid=stored.otid if stored else None
        )

    def key_of(self, follower: Follower) -> str | None:
        """The cursor key a chain this kernel follows is stored under."""
        return self._keys.get(id(follower))

    def followers(self) -> list[Follower]:
        """Every run chain this kernel follows (one follower per chain), oldest first."""
        return list(dict.fromkeys(self._followers.values()))

    def runs(self, **kw: Any) -> list[dict[str, Any]]:
        return self.backend.list_runs(**kw)

    # ---- history as DataFrames (frames.py builds the tables from these rows) ---------------
    def _agent_id(self, agent: str | None) -> str | None:
        return None if agent is None else self.resolve(agent)["id"]

    def _names(self, rows: Iterable[dict[str, Any]]) -> list[str | None]:
        """Agent names for every row: the session's cache, else one listing from the server
        (an agent this kernel never resolved still gets its name, not NaN)."""
        ids = [r.get("agent_id") for r in rows]
        names = {a: self.agent_name(a) for a in set(ids) if a}
        if any(v is None for v in names.values()):
            try:
                listed = {row.get("id"): row.get("name") for row in self.agents()}
            except LettaNbError:
                listed = {}
            names = {a: v or listed.get(a) for a, v in names.items()}
        return [names.get(a) if a else None for a in ids]

    def runs_frame(
        self,
        agent: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        conversation: str | None = None,
    ) -> pd.DataFrame:
        """Recent runs (newest first), optionally of one agent (name or id), of one
        conversation (a NAME or id, not created when missing) or only active ones."""
        from .frames import runs_table
        from .tables import RunsFrame

        kw: dict[str, Any] = {"agent_id": self._agent_id(agent), "active": active, "limit": limit}
        if conversation is not None:
            kw["conversation_id"] = self._conversation_id(conversation, agent)
        rows = self.runs(**kw)
        return RunsFrame(runs_table(rows, self._names(rows)))

    def _conversation_id(self, spec: str, agent: str | None) -> str:
        if spec.startswith("conv-"):
            return spec
        row = self.resolve(agent)
        found = [
            c
            for c in self.backend.list_conversations(row["id"], summary_search=spec)
            if c.get("summary") == spec
        ]
        if not found:
            raise NotFound(f"agent {row['name']} has no conversation named '{spec}'")
        return str(found[-1]["id"])

    def conversations_frame(self, agent: str | None = None, limit: int = 100) -> pd.DataFrame:
        """The agent's conversations (newest first): id, summary, agent, times (UTC)."""
        from .frames import conversations_table

        rows = self.conversations(agent, limit=limit)
        return conversations_table(rows, self._names(rows))

    def stored_frames(
        self, run_id: str, *, until: int | None = None, batch_size: int | None = None
    ) -> FrameLog:
        """Every stored frame of a run, read like every read (resumed after cuts, bounded).

        A run this kernel follows is read up to its cursor (or `until`); a live run followed
        by nobody here for a few seconds of silence; a finished run to its end. A hole the
        server no longer fills is one warning line.
        """
        follower = self._followers.get(run_id)
        live = False
        if until is None and follower is not None:
            until = follower.transcript.last_seq(run_id) or None
        if until is None:
            live = self.backend.get_run(run_id).get("status") not in FINAL_RUN_STATUSES
        frames = stored_frames(self.backend, run_id, until=until, live=live, batch_size=batch_size)
        if frames.holes:
            spans = ", ".join(f"{a}–{b}" for a, b in frames.holes[:3])
            log.warning("letta_nb: run %s: the server no longer has seqs %s", run_id, spans)
        return frames

    def chunks_frame(self, run_id: str, batch_size: int | None = None) -> pd.DataFrame:
        """Every stored frame of a run as a table (see `stored_frames`); `batch_size` is
        passed to the server's resume (frames per page of the stored replay)."""
        from .frames import chunk_row, chunks_table

        frames = self.stored_frames(run_id, batch_size=batch_size)
        return chunks_table([chunk_row(run_id, c) for c in frames.frames])

    def usage_frame(
        self, run_ids: Iterable[str] | None = None, agent: str | None = None, limit: int = 100
    ) -> pd.DataFrame:
        """Token usage per run: the given runs, else the `limit` newest (of `agent`)."""
        from .frames import usage_table

        if run_ids is None:
            runs = self.runs(agent_id=self._agent_id(agent), limit=limit)
        else:
            runs = [self.backend.get_run(rid) for rid in run_ids]
        usages: list[dict[str, Any]] = []
        for run in runs:
            try:
                usages.append(self.backend.run_usage(run["id"]))
            except LettaNbError:
                usages.append({})  # a run without usage yet (still starting): a row of <NA>
        return usage_table(runs, usages, self._names(runs))

    def agents_frame(self) -> pd.DataFrame:
        """The server's agents: name, id, model, creation time (UTC)."""
        from .frames import agents_table

        return agents_table(self.agents())

    def close(self) -> None:
        """Detach every live follower and release the connection (runs go on)."""
        for b in list(self._batches.values()):
            b.detach()
        for f in set(self._by_key.values()):
            if f.status not in SETTLED:
                f.detach()
        self.backend.close()
        if self.server is not None and hasattr(self.server, "stop"):
            self.server.stop()
        self.store.close()


@contextlib.contextmanager
def _agent_lock(base_url: str, name: str, timeout: float = 30.0) -> Iterator[None]:
    """An exclusive lock per (server, agent name) for this user's kernels (bounded wait).

    Without a writable state dir it does nothing: the worst case is a duplicate agent, never a
    failed connect.
    """
    from ._filelock import exclusive

    digest = hashlib.sha256(f"{base_url}\0{name}".encode()).hexdigest()[:16]
    path = default_state_dir() / "locks" / f"agent-{digest}.lock"
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            stack.enter_context(exclusive(path, timeout))  # taken, or another kernel is stuck
        except OSError:
            pass  # no writable state dir: at worst a duplicate agent, never a failed connect
        yield
