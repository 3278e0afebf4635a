"""Loopback TCP proxy that injects faults into HTTP/1.1 Server-Sent-Event responses.

Why: resumable streaming is only worth something if resuming is exact, so the reliability tests
need to break SSE connections at known, reproducible places: right after a complete frame,
in the middle of a frame (even inside a chunked-encoding size line), or by stalling. The proxy
sits between an HTTP client (httpx / ``letta-client``) and an HTTP server (uvicorn) and forwards
the raw bytes untouched, except where a fault is injected.

How cuts are located: the proxy parses both directions incrementally. Requests are framed only
far enough to know each request's method (``HEAD`` responses carry no body). Responses are framed
completely: the head (status, ``content-type``, ``transfer-encoding``, ``content-length``), the
chunked encoding (size lines, data, CRLFs, trailers) or identity bodies, and, for
``text/event-stream`` bodies, the de-chunked SSE text, where a blank line (``\\n\\n`` or
``\\r\\n\\r\\n``) ends a frame. Every event is reported as an offset into the *raw* byte stream,
so "after 3 frames" means "right after the raw byte that is the second ``\\n`` of frame 3",
wherever the chunk framing falls. A cut forwards the raw bytes up to that offset, waits until
the kernel has sent them, then closes the client socket (RST through ``SO_LINGER 0``, or FIN)
and aborts the upstream socket so the server sees the disconnect too.

Each streaming response gets one seeded decision (``random.Random(f"{seed}/{n}")`` for the n-th
response seen), so a failing run is reproduced by its seed; the seed is logged at start (pytest
prints captured logs on failure) and appears in ``repr(proxy)``. Non-streaming (REST) responses
pass through untouched unless ``cut_rest`` cuts them inside their body (at a seeded offset) or
``cut_before_headers`` drops responses to e.g. ``POST``. ``byte_budget=(lo, hi)`` cuts every
connection after a seeded number of bytes in that range (``Random(f"{seed}/conn/{c}")``),
whatever it carries: heads, JSON bodies, streams (a flaky link, as a user meets one).

Usage::

    from tests.reliability.fault_proxy import FaultPlan, FaultProxy

    plan = FaultPlan(cut_at_boundary=0.4, cut_mid_frame=0.4, stall=0.1,
                     stall_seconds=(0.05, 0.3), frames=(0, 20), max_faults=1000)
    with FaultProxy("127.0.0.1", server_port, seed=1234, plan=plan) as proxy:
        client = Letta(base_url=proxy.base_url, ...)   # or httpx.Client(base_url=...)
        ...  # stream, get cut, resume with starting_after=<last seq_id>, repeat
        print(proxy.stats)       # ProxyStats(connections=.., cuts_boundary=.., ...)
        print(proxy.faults[-1])  # FaultRecord(kind='cut_mid_frame', frames_before=7, ...)
        proxy.plan = FaultPlan()  # swap plans at any time: this one passes everything through

Limits: HTTP/1.1 only (no TLS, no HTTP/2), Linux (SIOCOUTQNSD); SSE lines ending in a lone
``\\r`` are not recognised as line ends; one fault at most per response (a stall may end in a
cut), so a pass-through draw lets the rest of that response through: for many cuts per run keep
the pass-through share small.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultPlan", "FaultProxy", "FaultRecord", "ProxyStats"]

log = logging.getLogger(__name__)

FaultKind = Literal[
    "cut_at_boundary", "cut_mid_frame", "stall", "cut_before_headers", "cut_rest", "cut_budget"
]

_MAX_HEAD = 64 * 1024
_READ_SIZE = 64 * 1024
_SIOCOUTQNSD = 0x894B  # Linux: bytes in the send queue not yet sent


# --------------------------------------------------------------------------- public API types


@dataclass(frozen=True)
class FaultPlan:
    """What to inject, decided once per response. The default plan passes everything through.

    ``cut_at_boundary``, ``cut_mid_frame`` and ``stall`` are probabilities per streaming
    response (their sum must be <= 1; the rest passes through). ``frames=(lo, hi)`` is the
    inclusive range of complete frames delivered before the fault (a boundary cut or stall after
    k frames; a mid-frame cut inside frame k+1). A stream that ends first is left alone.
    """

    cut_at_boundary: float = 0.0
    cut_mid_frame: float = 0.0
    stall: float = 0.0
    stall_seconds: tuple[float, float] = (0.05, 0.3)
    #: probability that a stall ends in a cut (at the same boundary) instead of continuing
    stall_then_cut: float = 0.0
    frames: tuple[int, int] = (0, 8)
    #: share of mid-frame cuts placed inside a chunk-size line (``"a3\r\n"``) instead of data
    chunk_header_share: float = 0.2
    #: probability to drop a response to one of ``before_headers_methods`` before its head
    cut_before_headers: float = 0.0
    before_headers_methods: tuple[str, ...] = ("POST",)
    #: probability to cut a non-streaming response inside its body (at a seeded offset)
    cut_rest: float = 0.0
    #: cut every connection after a seeded number of bytes to the client in ``[lo, hi]``
    byte_budget: tuple[int, int] | None = None
    #: probability that a cut is a RST (SO_LINGER 0) rather than a FIN
    rst: float = 0.5
    #: stop injecting once ``proxy.stats.faults`` (over the proxy's life) reaches this
    max_faults: int | None = None

    def __post_init__(self) -> None:
        total = self.cut_at_boundary + self.cut_mid_frame + self.stall
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {total} > 1")
        if not 0 <= self.frames[0] <= self.frames[1]:
            raise ValueError(f"bad frames range {self.frames}")
        if not 0 <= self.stall_seconds[0] <= self.stall_seconds[1]:
            raise ValueError(f"bad stall_seconds {self.stall_seconds}")
        if self.byte_budget is not None and not 0 < self.byte_budget[0] <= self.byte_budget[1]:
            raise ValueError(f"bad byte_budget {self.byte_budget}")


@dataclass
class ProxyStats:
    """Counters; ``FaultProxy.stats`` returns a consistent snapshot."""

    connections: int = 0  # client connections accepted
    upstream_refused: int = 0  # ... of which the upstream connect failed (client was reset)
    responses: int = 0  # responses forwarded to their end (cut ones are not counted)
    streams: int = 0  # text/event-stream response heads seen
    faults: int = 0  # injected faults of any kind (what ``max_faults`` limits)
    cuts_boundary: int = 0
    cuts_mid_frame: int = 0
    #: subset of ``cuts_mid_frame`` that landed inside a chunk-size line
    cuts_chunk_header: int = 0
    cuts_before_headers: int = 0
    cuts_rest: int = 0  # non-streaming responses cut inside their body
    cuts_budget: int = 0  # connections cut at their byte budget
    stalls: int = 0
    bytes_to_client: int = 0
    bytes_to_upstream: int = 0
    #: exceptions inside the proxy itself (a bug; the connection is closed): should stay 0
    internal_errors: int = 0

    @property
    def cuts(self) -> int:
        """All cuts, including stalls that ended in a cut."""
        return (
            self.cuts_boundary
            + self.cuts_mid_frame
            + self.cuts_before_headers
            + self.cuts_rest
            + self.cuts_budget
        )

    @property
    def bytes(self) -> int:
        return self.bytes_to_client + self.bytes_to_upstream


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault, for debugging and for checking a transcript against the cuts."""

    connection: int
    response: int  # ordinal of the response within the proxy (the RNG stream index)
    kind: FaultKind
    frames_before: int  # complete SSE frames of this response forwarded before the fault
    raw_offset: int  # body bytes (raw, still chunk-encoded) forwarded before the fault
    rst: bool = False
    stall_seconds: float = 0.0
    cut: bool = True  # False for a stall that continued
    in_chunk_header: bool = False


# --------------------------------------------------------------------------- HTTP/SSE framing


@dataclass
class _Head:
    status: int | None  # None for requests
    method: str | None  # request method (for responses: the matched request's method)
    headers: dict[str, str]

    @property
    def is_sse(self) -> bool:
        ctype = self.headers.get("content-type", "").lower()
        return ctype.split(";")[0].strip() == "text/event-stream"


@dataclass
class _Ev:
    kind: Literal[
        "head_start", "head", "size_start", "size_end", "frame_start", "frame_end", "body_end"
    ]
    pos: int
    head: _Head | None = None


class _Parser:
    """Incremental HTTP/1.1 framing for one direction; ``feed`` returns events at raw offsets.

    Why incremental and offset-based: faults must land at exact raw-byte positions while the
    bytes are forwarded as they arrive, whatever the TCP segmentation and chunk layout.
    """

    def __init__(self, *, response: bool, methods: deque[str]) -> None:
        self.response = response
        self.methods = methods  # request methods in order, shared between the two parsers
        self.state = "head"  # head | chunk_size | chunk_data | chunk_crlf | trailer | length
        # | close (body until EOF) | raw (after an upgrade or on garbage: no more parsing)
        self.buf = b""  # partial line (head, size line or trailer)
        self.head_raw = b""  # complete lines of the head being read
        self.in_head = False
        self.remaining = 0
        self.sse = False
        self.head: _Head | None = None
        # SSE scanner state
        self.line_has_content = False
        self.frame_has_content = False

    # -- SSE scanning of de-chunked body text
    def _scan_sse(self, data: bytes, base: int, out: list[_Ev]) -> None:
        i, n = 0, len(data)
        while i < n:
            if not self.frame_has_content:
                # skip bare line ends between frames; the first other byte starts a frame
                while i < n and data[i] in b"\r\n":
                    i += 1
                if i == n:
                    return
                self.frame_has_content = True
                self.line_has_content = True
                out.append(_Ev("frame_start", base + i))
                i += 1
                continue
            j = data.find(b"\n", i)
            if j < 0:
                if data[i:].strip(b"\r"):
                    self.line_has_content = True
                return
            if data[i:j].strip(b"\r"):
                self.line_has_content = True
            if self.line_has_content:
                self.line_has_content = False  # a line ended; the next may be blank
            else:
                out.append(_Ev("frame_end", base + j + 1))
                self.frame_has_content = False
            i = j + 1

    def _body(self, data: bytes, base: int, out: list[_Ev]) -> None:
        if self.sse and data:
            self._scan_sse(data, base, out)

    def _start_body(self, head: _Head, pos: int, out: list[_Ev]) -> None:
        h = head.headers
        self.sse = False
        self.line_has_content = self.frame_has_content = False
        if self.response:
            status = head.status or 0
            if 100 <= status < 200 and status != 101:
                self.state = "head"  # informational: the real response follows
                return
            method = self.methods.popleft() if self.methods else "GET"
            head.method = method
            if status == 101 or (method == "CONNECT" and 200 <= status < 300):
                self.state = "raw"
                return
            if method == "HEAD" or status in (204, 304):
                out.append(_Ev("body_end", pos, head))
                self.state = "head"
                return
            self.sse = head.is_sse
        else:
            self.methods.append(head.method or "GET")
        if "chunked" in h.get("transfer-encoding", "").lower():
            self.state = "chunk_size"
            out.append(_Ev("size_start", pos))
        elif "content-length" in h:
            try:
                self.remaining = int(h["content-length"])
            except ValueError:
                self.state = "raw"
                return
            if self.remaining == 0:
                out.append(_Ev("body_end", pos, head))
                self.state = "head"
            else:
                self.state = "length"
        elif self.response:
            self.state = "close"
        else:
            out.append(_Ev("body_end", pos, head))
            self.state = "head"

    @staticmethod
    def _parse_head(raw: bytes, response: bool) -> _Head | None:
        lines = raw.decode("latin-1").split("\n")
        first = lines[0].strip()
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                key = k.strip().lower()
                headers[key] = f"{headers[key]}, {v.strip()}" if key in headers else v.strip()
        parts = first.split(" ")
        if response:
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                return None
            return _Head(int(parts[1]), None, headers)
        if len(parts) < 3:
            return None
        return _Head(None, parts[0].upper(), headers)

    def feed(self, data: bytes) -> list[_Ev]:
        out: list[_Ev] = []
        i, n = 0, len(data)
        while i < n:
            st = self.state
            if st == "raw":
                return out
            if st == "close":
                self._body(data[i:], i, out)
                return out
            if st == "length":
                take = min(self.remaining, n - i)
                self._body(data[i : i + take], i, out)
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    out.append(_Ev("body_end", i, self.head))
                    self.state = "head"
                continue
            if st == "chunk_data":
                take = min(self.remaining, n - i)
                self._body(data[i : i + take], i, out)
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "chunk_crlf"
                    self.buf = b""
                continue
            if st == "chunk_crlf":
                # the CRLF after chunk data; tolerate a bare LF
                c = data[i : i + 1]
                i += 1
                if c == b"\n":
                    self.state = "chunk_size"
                    out.append(_Ev("size_start", i))
                elif c != b"\r":
                    self.state = "raw"
                continue
            # line-oriented states: head, chunk_size, trailer
            if st == "head" and not self.in_head:
                if data[i : i + 1] in (b"\r", b"\n") and not self.buf:
                    i += 1  # stray CRLF between messages (allowed before a request line)
                    continue
                self.in_head = True
                out.append(_Ev("head_start", i))
            j = data.find(b"\n", i)
            if j < 0:
                self.buf += data[i:]
                if len(self.buf) > _MAX_HEAD:
                    self.state = "raw"
                return out
            line = self.buf + data[i : j + 1]
            self.buf = b""
            i = j + 1
            if st == "chunk_size":
                out.append(_Ev("size_end", i))
                try:
                    self.remaining = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    self.state = "raw"
                    continue
                self.state = "chunk_data" if self.remaining else "trailer"
                continue
            if st == "trailer":
                if line.strip() == b"":
                    out.append(_Ev("body_end", i, self.head))
                    self.state = "head"
                continue
            # head: accumulate lines until a blank one
            self.head_raw += line
            if line.strip() != b"":
                if len(self.head_raw) > _MAX_HEAD:
                    self.state = "raw"
                continue
            raw, self.head_raw = self.head_raw, b""
            self.in_head = False
            head = self._parse_head(raw, self.response)
            if head is None:
                self.state = "raw"
                continue
            self.head = head
            out.append(_Ev("head", i, head))
            self._start_body(head, i, out)
        return out

    def feed_eof(self) -> list[_Ev]:
        """A close-delimited body ends at EOF."""
        if self.state == "close":
            self.state = "head"
            return [_Ev("body_end", 0, self.head)]
        return []


# --------------------------------------------------------------------------- fault decisions


@dataclass
class _Armed:
    """The fault chosen for the response being forwarded."""

    kind: FaultKind
    response: int
    frames: int
    rst: bool
    stall_seconds: float = 0.0
    then_cut: bool = False
    header_cut: bool = False  # mid-frame: cut inside a chunk-size line
    mid_frac: float = 0.5  # mid-frame: where in the candidate range


class _Cut(Exception):
    """Raised inside a connection handler to end it abruptly."""


_SendFn = Callable[[bytes, int], Awaitable[None]]
_CutFn = Callable[[bytes, int, bool], Awaitable[None]]


# --------------------------------------------------------------------------- the proxy


class FaultProxy:
    """Threaded asyncio proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults.

    Thread-safe surface: ``port``, ``base_url``, ``stats``, ``faults``, ``plan`` (assignable),
    ``close()``. Everything else runs on the proxy's own event loop thread.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        seed: int,
        plan: FaultPlan | None = None,
        drain_timeout: float = 1.0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.seed = seed
        self.plan = plan or FaultPlan()
        self.drain_timeout = drain_timeout
        self._stats = ProxyStats()
        self._faults: list[FaultRecord] = []
        self._lock = threading.Lock()
        self._response_no = 0
        self._conn_no = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="FaultProxy", daemon=True
        )
        self._thread.start()
        try:
            fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
            self._server = fut.result(timeout=5)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        log.info(
            "FaultProxy seed=%s port=%s -> %s:%s plan=%s",
            seed,
            self.port,
            *self.upstream,
            self.plan,
        )

    def __repr__(self) -> str:
        return (
            f"FaultProxy(seed={self.seed}, port={self.port}, upstream={self.upstream}, "
            f"plan={self.plan}, stats={self.stats})"
        )

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            log.error("FaultProxy seed=%s failed run: stats=%s", self.seed, self.stats)
        self.close()

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def faults(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._faults)

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, abort every open connection, stop the loop thread (bounded)."""
        if self._closed:
            return
        self._closed = True
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self._loop.close()

    # -- loop-thread internals
    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._on_client, "127.0.0.1", 0, reuse_address=True)

    async def _shutdown(self) -> None:
        self._server.close()
        for tr in list(self._transports):
            tr.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1)

    def _bump(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self._stats, k, getattr(self._stats, k) + v)

    def _budget_left(self, plan: FaultPlan) -> bool:
        return plan.max_faults is None or self._stats.faults < plan.max_faults

    def _decide(self, head: _Head) -> _Armed | None:
        """One seeded draw per response, in the order responses reach the proxy."""
        plan = self.plan
        self._response_no += 1
        n = self._response_no
        if head.is_sse:
            self._bump(streams=1)
        rng = random.Random(f"{self.seed}/{n}")
        rst = rng.random() < plan.rst
        if not self._budget_left(plan):
            return None
        if head.method in plan.before_headers_methods and rng.random() < plan.cut_before_headers:
            return _Armed("cut_before_headers", n, 0, rst)
        if not head.is_sse:
            if plan.cut_rest and rng.random() < plan.cut_rest:
                return _Armed("cut_rest", n, 0, rst, mid_frac=rng.random())
            return None
        u = rng.random()
        k = rng.randint(*plan.frames)
        if u < plan.cut_at_boundary:
            return _Armed("cut_at_boundary", n, k, rst)
        u -= plan.cut_at_boundary
        if u < plan.cut_mid_frame:
            return _Armed(
                "cut_mid_frame",
                n,
                k,
                rst,
                header_cut=rng.random() < plan.chunk_header_share,
                mid_frac=rng.random(),
            )
        u -= plan.cut_mid_frame
        if u < plan.stall:
            return _Armed(
                "stall",
                n,
                k,
                rst,
                stall_seconds=rng.uniform(*plan.stall_seconds),
                then_cut=rng.random() < plan.stall_then_cut,
            )
        return None

    def _budget(self, conn: int) -> tuple[int | None, bool]:
        """This connection's byte budget (None: unlimited) and whether its cut is a RST."""
        plan = self.plan
        if plan.byte_budget is None:
            return None, False
        rng = random.Random(f"{self.seed}/conn/{conn}")
        return rng.randint(*plan.byte_budget), rng.random() < plan.rst

    def _record(
        self, conn: int, armed: _Armed, frames: int, raw: int, *, cut: bool, in_header: bool = False
    ) -> bool:
        """Count a fault; False if ``max_faults`` was reached meanwhile (then skip it)."""
        with self._lock:
            mf = self.plan.max_faults
            if mf is not None and self._stats.faults >= mf:
                return False
            s = self._stats
            s.faults += 1
            if armed.kind == "cut_at_boundary":
                s.cuts_boundary += 1
            elif armed.kind == "cut_mid_frame":
                s.cuts_mid_frame += 1
                s.cuts_chunk_header += in_header
            elif armed.kind == "cut_before_headers":
                s.cuts_before_headers += 1
            elif armed.kind == "cut_rest":
                s.cuts_rest += 1
            elif armed.kind == "cut_budget":
                s.cuts_budget += 1
            else:
                s.stalls += 1
                if cut:
                    s.cuts_boundary += 1
            self._faults.append(
                FaultRecord(
                    conn,
                    armed.response,
                    armed.kind,
                    frames,
                    raw,
                    armed.rst and cut,
                    armed.stall_seconds,
                    cut,
                    in_header,
                )
            )
        log.info("FaultProxy seed=%s conn=%s: %s", self.seed, conn, self._faults[-1])
        return True

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_client(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        """Swallow our own shutdown's cancellation (asyncio 3.11 logs it as an error)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._handle(c_reader, c_writer)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._track(task)
        self._conn_no += 1
        conn = self._conn_no
        self._bump(connections=1)
        c_tr = c_writer.transport
        self._transports.add(c_tr)
        c_tr.set_write_buffer_limits(high=0)  # drain() then means "all bytes handed to kernel"
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), timeout=5
            )
        except (OSError, TimeoutError) as e:
            self._bump(upstream_refused=1)
            log.info("FaultProxy conn=%s: upstream %s:%s refused: %s", conn, *self.upstream, e)
            _abort(c_writer, rst=True)
            self._transports.discard(c_tr)
            return
        u_tr = u_writer.transport
        self._transports.add(u_tr)
        methods: deque[str] = deque()
        up = asyncio.ensure_future(self._pump_up(c_reader, u_writer, methods))
        down = asyncio.ensure_future(self._pump_down(conn, u_reader, c_writer, u_writer, methods))
        self._track(up)
        self._track(down)
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and (exc := t.exception()) is not None:
                    # a proxy bug must not pass for an injected fault: count it, log it loudly
                    self._bump(internal_errors=1)
                    log.error(
                        "FaultProxy seed=%s conn=%s: internal error", self.seed, conn, exc_info=exc
                    )
                    _abort(c_writer, rst=False)
                    _abort(u_writer, rst=False)
            await asyncio.wait({up, down})
        finally:
            for t in (up, down):
                if not t.done():
                    t.cancel()
            for w in (c_writer, u_writer):
                w.close()
            self._transports.discard(c_tr)
            self._transports.discard(u_tr)

    async def _pump_up(
        self, c_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter, methods: deque[str]
    ) -> None:
        """Client -> upstream: untouched bytes; parsed only to learn each request's method."""
        parser = _Parser(response=False, methods=methods)
        try:
            while True:
                data = await c_reader.read(_READ_SIZE)
                if not data:
                    if u_writer.can_write_eof() and not u_writer.transport.is_closing():
                        u_writer.write_eof()  # propagate a client half-close
                    return
                parser.feed(data)
                u_writer.write(data)
                self._bump(bytes_to_upstream=len(data))
                await u_writer.drain()
        except (ConnectionError, OSError):
            _abort(u_writer, rst=False)

    async def _pump_down(
        self,
        conn: int,
        u_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        u_writer: asyncio.StreamWriter,
        methods: deque[str],
    ) -> None:
        """Upstream -> client: parse responses, forward raw bytes, inject the armed fault."""
        parser = _Parser(response=True, methods=methods)
        held = b""  # an incomplete response head, kept back so a before-headers cut is clean
        armed: _Armed | None = None
        frames = 0  # complete frames of the current response
        body_start = 0  # absolute offset of the current body start (for FaultRecord.raw_offset)
        total = 0  # absolute offset of buf[0]
        frame_start: int | None = None  # offset of the target frame's first byte in ``buf``
        sizes: list[tuple[int, int]] = []  # offsets strictly inside the target's size lines
        size_open: int | None = None  # a size line of the target region began here
        sent = 0
        rest_cut: tuple[int, bool] | None = None  # (absolute offset, rst) of a REST body cut
        budget, budget_rst = self._budget(conn)
        conn_sent = 0  # bytes of this connection forwarded to the client
        cutting = False

        async def send(buf: bytes, upto: int) -> None:
            nonlocal sent, conn_sent
            if upto > sent:
                if budget is not None and not cutting and conn_sent + upto - sent > budget:
                    at = sent + max(0, budget - conn_sent)
                    over = _Armed("cut_budget", self._response_no, 0, budget_rst)
                    if self._record(conn, over, frames, conn_sent + at - sent, cut=True):
                        await cut(buf, at, budget_rst)
                c_writer.write(buf[sent:upto])
                self._bump(bytes_to_client=upto - sent)
                conn_sent += upto - sent
                sent = upto
                await c_writer.drain()

        async def cut(buf: bytes, at: int, rst: bool) -> None:
            nonlocal cutting
            cutting = True
            await send(buf, at)
            _abort(u_writer, rst=False)
            if rst and not await _wait_sent(c_writer, self.drain_timeout):
                rst = False  # a RST would drop bytes still queued in the kernel: FIN instead
            _abort(c_writer, rst=rst)
            raise _Cut

        try:
            while True:
                data = await u_reader.read(_READ_SIZE)
                if not data:
                    evs = parser.feed_eof()
                    buf, sent = held, 0
                    await send(buf, len(buf))
                    if evs:
                        self._bump(responses=1)
                    if c_writer.can_write_eof() and not c_writer.transport.is_closing():
                        c_writer.write_eof()  # propagate the server's close / half-close
                    return
                evs = parser.feed(data)
                shift = len(held)
                buf, held, sent = held + data, b"", 0
                hold_from = len(buf)
                head_start = 0
                for ev in evs:
                    p = ev.pos + shift
                    if ev.kind == "head_start":
                        hold_from = head_start = p
                    elif ev.kind == "head":
                        hold_from = len(buf)
                        assert ev.head is not None
                        if ev.head.status is not None and 100 <= ev.head.status < 200:
                            continue
                        frames, frame_start, sizes, size_open = 0, None, [], None
                        body_start = total + p
                        armed = self._decide(ev.head)
                        if armed is None:
                            continue
                        if armed.kind == "cut_before_headers":
                            if self._record(conn, armed, 0, 0, cut=True):
                                await cut(buf, head_start, armed.rst)
                            armed = None
                        elif armed.kind == "cut_rest":
                            length = int(ev.head.headers.get("content-length", "0") or 0)
                            if length > 0 and self._record(
                                conn, armed, 0, int(armed.mid_frac * length), cut=True
                            ):
                                rest_cut = (total + p + int(armed.mid_frac * length), armed.rst)
                            armed = None
                        elif armed.frames == 0 and armed.kind != "cut_mid_frame":
                            await self._fire_boundary(conn, armed, buf, p, 0, 0, send, cut)
                            armed = None
                    elif ev.kind == "body_end":
                        self._bump(responses=1)
                        armed, frame_start, sizes, size_open = None, None, [], None
                    elif armed is None:
                        continue
                    elif ev.kind == "frame_end":
                        frames += 1
                        if armed.kind == "cut_mid_frame" and frames == armed.frames + 1:
                            lo = frame_start + 1 if frame_start is not None else sent
                            # stop before the blank line's "\r" too: a lone CR ends a line in SSE
                            hi = p - 2 if buf[p - 2 : p - 1] == b"\r" else p - 1
                            await self._fire_mid(
                                conn,
                                armed,
                                buf,
                                lo,
                                hi,
                                sizes,
                                frames - 1,
                                total - body_start,
                                cut,
                            )
                        elif armed.kind != "cut_mid_frame" and frames == armed.frames:
                            await self._fire_boundary(
                                conn, armed, buf, p, frames, total + p - body_start, send, cut
                            )
                            armed = None
                    elif ev.kind == "frame_start":
                        if frames == armed.frames:
                            frame_start = p
                    elif ev.kind == "size_start":
                        if frames == armed.frames:
                            size_open = p
                    elif ev.kind == "size_end":
                        if size_open is not None and p - 1 > size_open:
                            sizes.append((size_open + 1, p - 1))
                        size_open = None
                # end of buffer inside the target frame (or its size line): cut within this part
                if armed is not None and armed.kind == "cut_mid_frame" and frames == armed.frames:
                    if size_open is not None and size_open < hold_from:
                        sizes.append((size_open + 1, hold_from))
                    size_open = None
                    if frame_start is not None or (armed.header_cut and sizes):
                        lo = frame_start + 1 if frame_start is not None else 1
                        hi = hold_from if frame_start is not None else 0
                        await self._fire_mid(
                            conn, armed, buf, lo, hi, sizes, frames, total - body_start, cut
                        )
                    sizes = []
                    frame_start = None
                if rest_cut is not None and rest_cut[0] < total + hold_from:
                    await cut(buf, rest_cut[0] - total, rest_cut[1])
                held = buf[hold_from:]
                await send(buf, hold_from)
                total += hold_from
        except _Cut:
            return
        except (ConnectionError, OSError):
            _abort(c_writer, rst=False)
            _abort(u_writer, rst=False)

    async def _fire_boundary(
        self,
        conn: int,
        armed: _Armed,
        buf: bytes,
        at: int,
        frames: int,
        raw: int,
        send: _SendFn,
        cut: _CutFn,
    ) -> None:
        """Boundary cut, or stall (then maybe cut), right after ``frames`` complete frames."""
        if armed.kind == "cut_at_boundary":
            if self._record(conn, armed, frames, raw, cut=True):
                await cut(buf, at, armed.rst)
            return
        if not self._record(conn, armed, frames, raw, cut=armed.then_cut):
            return
        await send(buf, at)
        await asyncio.sleep(armed.stall_seconds)
        if armed.then_cut:
            await cut(buf, at, armed.rst)

    async def _fire_mid(
        self,
        conn: int,
        armed: _Armed,
        buf: bytes,
        lo: int,
        hi: int,
        sizes: list[tuple[int, int]],
        frames: int,
        raw_base: int,
        cut: _CutFn,
    ) -> None:
        """Cut at a seeded offset in the target frame: data ``[lo, hi]`` or a size line.

        An offset ``at`` means the client gets ``buf[:at]``; ``hi`` excludes the frame's final
        newline, so the frame is never complete. ``sizes`` are offsets strictly inside
        chunk-size lines, chosen when the plan drew a header cut and one is available.
        """
        if armed.header_cut and sizes:
            span = [h - lo_ + 1 for lo_, h in sizes]
            idx = min(int(armed.mid_frac * sum(span)), sum(span) - 1)
            for (rlo, _), n in zip(sizes, span, strict=True):
                if idx < n:
                    at = rlo + idx
                    break
                idx -= n
        elif hi >= lo:
            at = lo + min(int(armed.mid_frac * (hi - lo + 1)), hi - lo)
        else:
            return
        in_header = any(rlo <= at <= rhi for rlo, rhi in sizes)
        if self._record(conn, armed, frames, raw_base + at, cut=True, in_header=in_header):
            await cut(buf, at, armed.rst)


# --------------------------------------------------------------------------- socket helpers


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close abruptly; with ``rst`` send a TCP RST (SO_LINGER 0) instead of a FIN."""
    tr = writer.transport
    if rst:
        sock = tr.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tr.abort()
    else:
        tr.close()  # flushes what asyncio still holds, then FIN


async def _wait_sent(writer: asyncio.StreamWriter, timeout: float) -> bool:
    """Wait until the kernel has transmitted everything: a RST discards unsent data.

    SIOCOUTQNSD counts bytes not yet sent (SIOCOUTQ would also wait for the peer's delayed
    ACK, ~40 ms a cut). On loopback, a sent segment is already in the peer's receive queue,
    and Linux lets the peer read it before it reports the reset.
    """
    sock = writer.transport.get_extra_info("socket")
    if sock is None or writer.transport.get_write_buffer_size():
        return False
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while True:
        try:
            fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, buf)
        except OSError:
            return False
        if struct.unpack("i", buf)[0] == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.001)
