"""Tests of the fault proxy itself, against a tiny local SSE server (uvicorn) and raw sockets.

Why: the product's "no frame lost or duplicated" proof is only as good as the proxy's promise
of where it cuts, so each fault kind is checked byte for byte here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.reliability.fault_proxy import FaultPlan, FaultProxy, _Parser

N = 20
TIMEOUT = httpx.Timeout(5.0)


def frame(i: int) -> bytes:
    return f'data: {{"seq_id": {i}}}\n\n'.encode()


def frames(lo: int, hi: int) -> bytes:
    """Frames ``lo..hi`` inclusive, as the server sends them."""
    return b"".join(frame(i) for i in range(lo, hi + 1))


# --------------------------------------------------------------------------- SSE server


async def _stream(request: Request) -> Response:
    q = request.query_params
    n, after, split = int(q.get("n", N)), int(q.get("starting_after", 0)), q.get("split") == "1"

    async def gen() -> AsyncIterator[bytes]:
        for i in range(after + 1, n + 1):
            f = frame(i)
            if split:  # one frame over two chunks: cuts can land in a size line mid-frame
                yield f[:9]
                yield f[9:]
            else:
                yield f

    return StreamingResponse(gen(), media_type="text/event-stream")


async def _json(request: Request) -> Response:
    return JSONResponse({"ok": True, "pad": "x" * 500})


APP = Starlette(
    routes=[
        Route("/stream", _stream, methods=["GET", "POST"]),
        Route("/json", _json, methods=["GET", "POST"]),
    ]
)


@pytest.fixture(scope="module")
def sse_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(APP, log_level="warning", lifespan="off"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield port
    server.should_exit = True
    th.join(timeout=5)
    sock.close()


# --------------------------------------------------------------------------- raw helpers


class RawServer:
    """One-shot upstream: reads a request head, replies with canned bytes, then closes.

    Why: byte-identity and half-close tests need a server whose bytes are fully known.
    """

    def __init__(self, reply: bytes, *, half_close: bool = False) -> None:
        self.reply, self.half_close = reply, half_close
        self.received = b""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            while b"\r\n\r\n" not in self.received:
                data = conn.recv(65536)
                if not data:
                    break
                self.received += data
            conn.sendall(self.reply)
            if self.half_close:
                conn.shutdown(socket.SHUT_WR)
                with contextlib.suppress(OSError):
                    while conn.recv(65536):  # keep reading until the proxy closes
                        pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


def raw_exchange(port: int, request: bytes, *, shut_wr: bool = False) -> tuple[bytes, bool]:
    """Send raw request bytes, read to EOF; returns (bytes, whether the connection was reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            while data := s.recv(65536):
                got += data
        except ConnectionResetError:
            return got, True
        return got, False


def stream_body(
    client: httpx.Client, url: str, method: str = "GET"
) -> tuple[bytes, Exception | None]:
    """De-chunked body bytes received before the stream ended or broke."""
    body = b""
    try:
        with client.stream(method, url) as r:
            for chunk in r.iter_raw():
                body += chunk
    except httpx.TransportError as e:
        return body, e
    return body, None


def proxy_for(port: int, seed: int, **plan: object) -> FaultProxy:
    return FaultProxy("127.0.0.1", port, seed=seed, plan=FaultPlan(**plan))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parser


def _sample_responses() -> tuple[bytes, list[str]]:
    """Several responses on one connection, with every framing the parser must follow."""
    sse_body = frames(1, 3) + b"data: a\r\ndata: b\r\n\r\n: comment\n\n"
    chunks = [sse_body[:5], sse_body[5:40], sse_body[40:41], sse_body[41:]]
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-T: 1\r\n\r\n"
    stream = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunked
        + b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n"
        + b"HEAD-NONE"
        + b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 50\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\n"
        + frames(7, 8)
    )
    return stream, ["POST", "GET", "HEAD", "GET"]


def _events(chunks: list[bytes], methods: list[str]) -> list[tuple[str, int]]:
    p = _Parser(response=True, methods=deque(methods))
    out, base = [], 0
    for c in chunks:
        out += [(e.kind, e.pos + base) for e in p.feed(c)]
        base += len(c)
    out += [(e.kind, base) for e in p.feed_eof()]
    return out


def test_parser_finds_frame_ends_at_raw_offsets_whatever_the_segmentation() -> None:
    data, methods = _sample_responses()
    whole = _events([data], methods)
    ends = [pos for kind, pos in whole if kind == "frame_end"]
    # every frame end is right after a blank line's LF in the raw bytes
    assert all(data[pos - 1 : pos] == b"\n" for pos in ends)
    assert [data[pos - 2 : pos] for pos in ends] == [b"\n\n"] * 3 + [b"\r\n", b"\n\n"] * 1 + [
        b"\n\n"
    ] * 2
    assert sum(kind == "body_end" for kind, _ in whole) == 4
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 30)))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert _events(parts, methods) == whole
    one_byte = [data[i : i + 1] for i in range(len(data))]
    assert _events(one_byte, methods) == whole


# --------------------------------------------------------------------------- pass-through


def test_passthrough_is_byte_identical_both_ways() -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in (frame(1), frame(2) + frame(3)))
    reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n" + body + b"0\r\n\r\n"
    )
    request = b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    up = RawServer(reply)
    with proxy_for(up.port, seed=1) as proxy:
        got, reset = raw_exchange(proxy.port, request)
        up.close()
        stats = proxy.stats
    assert (got, reset) == (reply, False)
    assert up.received == request
    assert (stats.bytes_to_client, stats.bytes_to_upstream) == (len(reply), len(request))
    assert (stats.connections, stats.responses, stats.streams, stats.faults) == (1, 1, 1, 0)


def test_keepalive_connection_carries_several_requests(sse_port: int) -> None:
    """HEAD, JSON and SSE responses share one pooled connection; the parser stays in step."""
    with proxy_for(sse_port, seed=2, cut_at_boundary=1.0, frames=(2, 2), max_faults=1) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            assert c.get("/json").json()["ok"] is True
            assert c.head("/json").status_code == 200
            assert c.post("/json").json()["ok"] is True
            body, err = stream_body(c, "/stream")  # the one fault: after 2 frames
            assert (body, type(err)) in {
                (frames(1, 2), httpx.RemoteProtocolError),
                (frames(1, 2), httpx.ReadError),
            }
            for _ in range(3):  # budget spent: whole streams, on one new pooled connection
                assert stream_body(c, "/stream") == (frames(1, N), None)
                assert c.get("/json").status_code == 200
        stats = proxy.stats
    assert stats.connections == 2, stats
    assert (stats.responses, stats.streams, stats.faults, stats.cuts_boundary) == (9, 4, 1, 1)


def test_non_streaming_responses_are_never_faulted(sse_port: int) -> None:
    with proxy_for(sse_port, seed=3, cut_at_boundary=1.0, frames=(0, 0)) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            for _ in range(5):
                assert c.get("/json").json() == {"ok": True, "pad": "x" * 500}
        assert proxy.stats.faults == 0


# --------------------------------------------------------------------------- cuts


def test_boundary_cuts_deliver_only_whole_frames(sse_port: int) -> None:
    with proxy_for(sse_port, seed=4, cut_at_boundary=1.0, frames=(0, N - 1)) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            for i in range(30):
                body, err = stream_body(c, "/stream")
                k = proxy.faults[-1].frames_before
                assert err is not None and body == frames(1, k), (i, proxy)
        faults, stats = proxy.faults, proxy.stats
    assert stats.cuts_boundary == stats.faults == 30 == stats.connections
    assert {f.rst for f in faults} == {True, False}  # both RST and FIN cuts were exercised
    assert len({f.frames_before for f in faults}) > 8


@pytest.mark.parametrize("split", [False, True])
def test_mid_frame_cuts_leave_a_partial_frame(sse_port: int, split: bool) -> None:
    url = f"/stream?split={int(split)}"
    plan = {"cut_mid_frame": 1.0, "frames": (0, N - 1), "chunk_header_share": 0.0}
    with proxy_for(sse_port, seed=5, **plan) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            for i in range(30):
                body, err = stream_body(c, url)
                k = proxy.faults[-1].frames_before
                whole, partial = body[: len(frames(1, k))], body[len(frames(1, k)) :]
                assert err is not None and whole == frames(1, k), (i, proxy)
                assert partial and frame(k + 1).startswith(partial), (i, partial, proxy)
                assert len(partial) < len(frame(k + 1))  # the closing newline never arrives
        stats = proxy.stats
    assert stats.cuts_mid_frame == stats.faults == 30
    if not split:  # one chunk per frame: a data cut can never land in a size line
        assert stats.cuts_chunk_header == 0


def test_mid_frame_cut_inside_chunk_size_line(sse_port: int) -> None:
    """With ``chunk_header_share=1`` the raw bytes end inside a hex size line.

    When the next chunk's size line reached the proxy in the same read as the previous frame's
    end (TCP coalesces writes on a loaded machine), it is not inside the armed frame's byte
    range and the proxy falls back to an ordinary mid-frame cut, recorded as such.
    """
    # Every frame split over two chunks: a size line always lies inside the armed frame.
    req = b"GET /stream?split=1 HTTP/1.1\r\nhost: x\r\n\r\n"
    plan = {"cut_mid_frame": 1.0, "frames": (0, N - 1), "chunk_header_share": 1.0}
    with proxy_for(sse_port, seed=6, **plan) as proxy:
        for i in range(15):
            got, _ = raw_exchange(proxy.port, req)
            f = proxy.faults[-1]
            body = got.split(b"\r\n\r\n", 1)[1]
            assert f.kind == "cut_mid_frame" and len(body) == f.raw_offset, (i, proxy)
            if not f.in_chunk_header:  # the fallback: the body ends inside a frame's data
                assert not body.endswith(b"\n\n"), (i, body[-40:])
                continue
            head, tail = body.rsplit(b"\r\n", 1) if b"\r\n" in body else (b"", body)
            assert re.fullmatch(rb"[0-9a-f]+\r?", tail), (i, tail)
            decoded = re.sub(rb"(?:^|\r\n)[0-9a-f]+\r\n", b"", head)
            whole = frames(1, f.frames_before)
            partial = decoded[len(whole) :]  # the cut frame's first chunk, if the cut follows it
            assert decoded.startswith(whole), (i, proxy)
            assert frame(f.frames_before + 1).startswith(partial), (i, partial)  # maybe empty
        assert proxy.stats.cuts_mid_frame == 15
        # A size line can still reach the proxy in the same read as the previous frame's end
        # (seen 1 in 15 on a loaded CI run); such a cut falls back to one inside the data.
        assert proxy.stats.cuts_chunk_header >= 10, proxy


def test_cut_before_headers_drops_posts_only(sse_port: int) -> None:
    with proxy_for(sse_port, seed=7, cut_before_headers=1.0) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            with pytest.raises(httpx.TransportError):
                c.post("/json")
            assert stream_body(c, "/stream", "GET") == (frames(1, N), None)
            assert stream_body(c, "/stream", "POST")[1] is not None
        assert proxy.stats.cuts_before_headers == proxy.stats.faults == 2


# --------------------------------------------------------------------------- stalls


def _timed_frames(client: httpx.Client, url: str) -> tuple[list[float], Exception | None]:
    t0, times, buf = time.monotonic(), [], b""
    try:
        with client.stream("GET", url) as r:
            for chunk in r.iter_raw():
                buf += chunk
                while b"\n\n" in buf:
                    _, buf = buf.split(b"\n\n", 1)
                    times.append(time.monotonic() - t0)
    except httpx.TransportError as e:
        return times, e
    return times, None


def test_stall_delays_then_continues_or_cuts(sse_port: int) -> None:
    plan = {"stall": 1.0, "stall_seconds": (0.3, 0.3), "frames": (3, 3)}
    with proxy_for(sse_port, seed=8, **plan) as proxy:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            times, err = _timed_frames(c, "/stream")
            assert err is None and len(times) == N
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps[2] >= 0.28 and gaps.index(max(gaps)) == 2, times  # after frame 3
            proxy.plan = FaultPlan(**{**plan, "stall_then_cut": 1.0})  # type: ignore[arg-type]
            times, err = _timed_frames(c, "/stream")
            assert err is not None and len(times) == 3
        stats = proxy.stats
    assert (stats.stalls, stats.cuts_boundary, stats.faults) == (2, 1, 2)
    assert [f.cut for f in proxy.faults] == [False, True]


def test_close_is_bounded_during_a_long_stall(sse_port: int) -> None:
    proxy = proxy_for(sse_port, seed=9, stall=1.0, stall_seconds=(30, 30), frames=(1, 1))
    result: list[object] = []

    def client() -> None:
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            result.append(stream_body(c, "/stream"))

    th = threading.Thread(target=client)
    th.start()
    deadline = time.monotonic() + 5
    while proxy.stats.stalls == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proxy.close()  # aborts the stalled connection (its own waits are bounded)
    th.join(timeout=5)
    assert not th.is_alive()
    body, err = result[0]  # type: ignore[misc]
    assert body == frames(1, 1) and err is not None


# --------------------------------------------------------------------------- robustness


def test_upstream_refusing_connections(sse_port: int) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    with FaultProxy("127.0.0.1", dead_port, seed=10) as proxy:
        with pytest.raises(httpx.TransportError) as info:
            httpx.get(f"{proxy.base_url}/json", timeout=TIMEOUT)
        assert not isinstance(info.value, httpx.TimeoutException)  # reset at once, no hang
        assert proxy.stats.upstream_refused == 1


def test_half_closes_are_propagated() -> None:
    """The client shuts its write side after the request; the server answers with a
    close-delimited SSE body and half-closes. Faults still land on frame boundaries."""
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + frames(1, 5)
    up = RawServer(reply, half_close=True)
    with proxy_for(up.port, seed=11, cut_at_boundary=1.0, frames=(2, 2), rst=0.0) as proxy:
        got, reset = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", shut_wr=True)
        assert got == reply.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + frames(1, 2)
        assert not reset
    up.close()
    up = RawServer(reply, half_close=True)
    with proxy_for(up.port, seed=11) as proxy:
        assert raw_exchange(proxy.port, b"GET / HTTP/1.1\r\n\r\n", shut_wr=True) == (reply, False)
        assert proxy.stats.responses == 1
    up.close()


def test_same_seed_same_faults(sse_port: int) -> None:
    plan = {"cut_at_boundary": 0.3, "cut_mid_frame": 0.3, "stall": 0.2, "stall_seconds": (0, 0)}

    def run() -> list[tuple[str, int, int]]:
        with proxy_for(sse_port, seed=12, **plan) as proxy:
            with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
                for _ in range(15):
                    stream_body(c, "/stream")
            return [(f.kind, f.frames_before, f.raw_offset) for f in proxy.faults]

    first = run()
    assert len(first) > 5 and first == run()


# --------------------------------------------------------------------------- resuming client


def follow(base_url: str, n: int, on_cut: Callable[[], None]) -> list[int]:
    """A minimal resuming follower: stream, keep complete frames, resume after the last seq_id."""
    seqs: list[int] = []
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as c:
        for _ in range(10 * n):
            after = seqs[-1] if seqs else 0
            buf = b""
            try:
                with c.stream("GET", f"/stream?n={n}&starting_after={after}") as r:
                    for chunk in r.iter_raw():
                        buf += chunk
                        while b"\n\n" in buf:
                            raw, buf = buf.split(b"\n\n", 1)
                            seqs.append(json.loads(raw.removeprefix(b"data: "))["seq_id"])
                return seqs  # clean end of stream
            except httpx.TransportError:
                on_cut()  # the partial frame in ``buf`` is dropped, as an SSE client does
    raise AssertionError(f"no clean end after {10 * n} attempts")


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_resuming_client_reassembles_every_frame_exactly_once(sse_port: int, seed: int) -> None:
    n = 150
    # one fault per response, so a pass-through draw lets the rest of the run through: keep
    # that rare (5 %) to get many cuts per run
    plan = FaultPlan(
        cut_at_boundary=0.45,
        cut_mid_frame=0.45,
        stall=0.1,
        stall_then_cut=0.5,
        stall_seconds=(0.0, 0.02),
        frames=(0, 12),
        chunk_header_share=0.3,
    )
    cuts = 0

    def on_cut() -> None:
        nonlocal cuts
        cuts += 1

    with FaultProxy("127.0.0.1", sse_port, seed=seed, plan=plan) as proxy:
        seqs = follow(proxy.base_url, n, on_cut)
        stats = proxy.stats
    assert seqs == list(range(1, n + 1)), f"seed={seed} {stats}"
    assert cuts == stats.cuts >= 5, f"seed={seed} {stats}"
    assert stats.cuts_boundary and stats.cuts_mid_frame and stats.stalls
    assert stats.internal_errors == 0


# --------------------------------------------------------------------------- REST and budgets


def test_rest_cuts_break_json_bodies_inside(sse_port: int) -> None:
    """`cut_rest`: a non-streaming answer ends inside its body (the client sees a broken
    response, never a shorter valid one); streams are left alone by it."""
    with proxy_for(sse_port, seed=13, cut_rest=1.0) as proxy:
        for _ in range(10):
            with (
                httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c,
                pytest.raises(httpx.TransportError),
            ):
                c.get("/json")
        with httpx.Client(base_url=proxy.base_url, timeout=TIMEOUT) as c:
            assert stream_body(c, "/stream") == (frames(1, N), None)
        stats, faults = proxy.stats, proxy.faults
    assert stats.cuts_rest == stats.faults == 10 and stats.cuts == 10
    assert {f.kind for f in faults} == {"cut_rest"}
    assert all(0 <= f.raw_offset < 520 for f in faults) and len({f.raw_offset for f in faults}) > 3


def test_byte_budget_cuts_every_connection_whatever_it_carries(sse_port: int) -> None:
    """`byte_budget=(lo, hi)`: each connection gets a seeded number of bytes, then is cut —
    in a head, a JSON body or a stream alike (the issue's "cut after 600-20,000 bytes")."""
    with proxy_for(sse_port, seed=14, byte_budget=(100, 900), rst=0.0) as proxy:
        got: list[int] = []
        for _ in range(12):
            raw, _reset = raw_exchange(proxy.port, b"GET /stream?n=200 HTTP/1.1\r\nhost: x\r\n\r\n")
            got.append(len(raw))
        stats, faults = proxy.stats, proxy.faults
    assert stats.cuts_budget == stats.faults == 12 == stats.connections
    assert [f.raw_offset for f in faults] == got  # exactly the budget, byte for byte
    assert all(100 <= n <= 900 for n in got) and len(set(got)) > 6
