"""Connecting: which server and key a kernel's session uses, and the kernel's current session.

Explicit arguments, then `LETTA_BASE_URL` / `LETTA_API_KEY` (a key alone means Letta Cloud), else
the state dir's embedded server (launched once under a file lock, always with a token, relaunched
when it dies). A connection that fails never becomes the current session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .core.cursor import default_state_dir
from .core.errors import LettaNbError, ServerUnavailable, Unauthorized
from .core.secrets import register_secret
from .session import Session

#: Where a key without a base URL points, as in letta-client's default environment.
LETTA_CLOUD_URL = "https://api.letta.com"

_current: Session | None = None
_current_lock = threading.Lock()


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
    """The state dir's detached server, started once under a file lock and always with a
    token (the caller's API key). A server that cannot start is one line naming its log; there
    is no fallback. (`Session.ensure_agent` then finds or creates the demo agent, under its own
    lock, so kernels connecting at once share one.)"""
    from .server.launcher import ServerStartError, ensure_server

    state = default_state_dir() / "server"
    try:
        info = ensure_server(state)
    except ServerStartError as exc:
        raise ServerUnavailable(str(exc)) from None
    return info.base_url, info.token, _Relauncher(state)


def connect(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    agent: str | None = None,
    backend_factory: Callable[..., Any] | None = None,
    conversation: str | None = None,
) -> Session:
    """Explicit args → LETTA_BASE_URL / LETTA_API_KEY → the embedded server with a demo agent.

    `conversation` binds the session's sends to one (see `Session.use_conversation`)."""
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
    if conversation is not None:
        try:
            session.use_conversation(conversation)
        except LettaNbError:
            session.close()
            raise
    with _current_lock:
        _current = session
    return session


def current() -> Session:
    """This kernel's session, connecting (env or embedded server) on first use."""
    global _current
    with _current_lock:
        session = _current
    return session if session is not None else connect()
