"""What a request must be before any route sees it (pure ASGI, no response buffering).

The server listens on loopback, where a web page in the user's browser can reach it too. So,
as Jupyter Server does for its loopback server:

* ``Host`` must be a loopback name or the bound host (``--allow-host`` adds names): a page
  that rebinds its own DNS name to 127.0.0.1 sends its own name and is refused (403).
* A request carrying a foreign ``Origin`` is refused (403) unless ``--allow-origin`` names it;
  clients outside a browser send none.
* A bearer token, when the server has one (the one ``connect()`` launches always does): 401.
* A request body must be ``application/json`` (415): a page can send ``text/plain`` without a
  CORS preflight, never JSON.
* Bodies over ``max_body_bytes`` are a 413; JSON nested deeper than ``max_json_depth``, with
  an unpaired UTF-16 surrogate (``"\\ud800"``) or NaN/Infinity is a 422, so nothing that cannot
  be stored and served back ever reaches storage.

Every refusal is Letta-shaped (``{"detail": …}``) and logged as one line.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import re
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from letta_nb.server.config import ServerConfig

log = logging.getLogger("letta_nb.server.requests")

OPEN_PATHS = frozenset({"/v1/health", "/v1/health/"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or origin authority (brackets and port removed)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def is_loopback(host: str) -> bool:
    host = host_name(host)
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def json_depth_over(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit`` (without recursing)."""
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", body))
    for _ in range(limit):
        if not brackets:
            return False
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not removed:  # unbalanced (not JSON): deep only if what is left could nest deep
            return len(brackets) > limit
    return bool(brackets)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def body_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` can never be stored and served back (None: fine, or not JSON at all)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "Request body is not valid UTF-8"
    if json_depth_over(body, max_depth):
        return f"Request body nests JSON deeper than {max_depth} levels"
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except ValueError as exc:
        if "not valid JSON" in str(exc) or "out of range" in str(exc):
            return f"Request body: {exc}"
        return None  # malformed JSON: FastAPI answers its own 422
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "Request body contains an unpaired UTF-16 surrogate (e.g. \\ud800)"
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.hosts = {host_name(h) for h in (config.host, *config.allowed_hosts)}
        self.origins = {o.rstrip("/").lower() for o in config.allowed_origins}
        self.token = f"Bearer {config.token}".encode() if config.token else None
        self.max_body = config.max_body_bytes
        self.max_depth = config.max_json_depth

    def _host_ok(self, host: str) -> bool:
        return is_loopback(host) or host_name(host) in self.hosts

    def _origin_ok(self, origin: str, scope: Scope) -> bool:
        """A listed origin, or the server's own (http, an allowed host, this port)."""
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        try:
            url = urlsplit(origin)
            port = url.port or 80
        except ValueError:
            return False
        server = scope.get("server") or ("", None)
        return (
            url.scheme == "http"
            and url.hostname is not None
            and self._host_ok(url.hostname)
            and port == server[1]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (this server has no websocket routes)
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)

        async def refuse(status: int, detail: str) -> None:
            log.info("%s %s -> %d %s", scope["method"], scope["path"], status, detail)
            extra = {"x-should-retry": "false"} if status in (401, 403, 413, 415) else None
            await JSONResponse({"detail": detail}, status_code=status, headers=extra)(
                scope, receive, send
            )

        host = headers.get(b"host", b"").decode("latin-1")
        if not self._host_ok(host):
            shown = host[:80] or "(none)"
            await refuse(
                403,
                f"Forbidden: Host {shown!r} is not allowed "
                "(start the server with --allow-host NAME to allow a name)",
            )
            return
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_ok(origin.decode("latin-1"), scope):
            shown = origin.decode("latin-1")[:80]
            await refuse(
                403,
                f"Forbidden: Origin {shown!r} is not allowed "
                "(start the server with --allow-origin ORIGIN to allow one)",
            )
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.token):
                await refuse(401, "Unauthorized: a valid Bearer token is required.")
                return
        length_header = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        try:
            length = int(length_header) if length_header is not None else 0
        except ValueError:
            await refuse(400, "Invalid Content-Length header")
            return
        if length == 0 and not chunked:
            await self.app(scope, receive, send)
            return
        ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != b"application/json":
            await refuse(415, "Unsupported Media Type: request bodies must be application/json")
            return
        if length > self.max_body:
            await refuse(413, f"Request body too large (limit {self.max_body} bytes)")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await refuse(413, f"Request body too large (limit {self.max_body} bytes)")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = body_problem(body, self.max_depth)
        if problem is not None:
            await refuse(422, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
