"""connect(): which server a configuration means, and failures that must not become current."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import letta_nb.connection as session_mod
from letta_nb.backend import Backend
from letta_nb.core.errors import ServerUnavailable, Unauthorized
from tests.client.fake_backend import MemoryBackend

KEY = "sk-letta-nb-FAKE-connect-0123456789"


class _Recorder:
    """A backend factory remembering what it was given, failing agent lookups like `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, base_url: str, api_key: str | None) -> MemoryBackend:
        self.calls.append((base_url, api_key))
        error = self.error

        class _Backend(MemoryBackend):  # a typed LettaBackend whose lookups fail
            def resolve_agent(self, name_or_id: str) -> dict[str, Any]:
                raise error

        backend = _Backend()
        backend.base_url = base_url
        return backend


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LETTA_BASE_URL", raising=False)
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    monkeypatch.setattr(session_mod, "_current", None)


def test_a_key_alone_means_letta_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_API_KEY", KEY)
    monkeypatch.setattr(
        session_mod,
        "_embedded",
        lambda: pytest.fail("a cloud key must never go to the embedded server"),
    )
    factory = _Recorder(ServerUnavailable("cannot reach the Letta server"))
    with pytest.raises(ServerUnavailable):
        session_mod.connect(backend_factory=factory)
    assert factory.calls == [(session_mod.LETTA_CLOUD_URL, KEY)]


@pytest.mark.parametrize(
    "error",
    [
        ServerUnavailable("cannot reach the Letta server at x"),
        Unauthorized("the Letta server refused the API key"),
    ],
)
def test_dead_url_or_refused_key_never_becomes_current(error: Exception) -> None:
    before = session_mod._current
    with pytest.raises(type(error)):
        session_mod.connect("http://127.0.0.1:9", "k", backend_factory=_Recorder(error))
    assert session_mod._current is before


def test_connection_refused_is_one_line_and_not_current() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ServerUnavailable) as info:
        session_mod.connect(url, backend_factory=lambda u, k: Backend(u, k, max_retries=0))
    assert "\n" not in str(info.value) and url in str(info.value)
    assert session_mod._current is None
