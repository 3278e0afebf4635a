"""`letta-nb server`'s listening socket: accepted connections must not wait on Nagle."""

from __future__ import annotations

import asyncio
import socket
import threading

from letta_nb.server.main import listening_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it each
    multi-write response of the detached server waited ~40 ms for a delayed ACK."""
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("socket")
            seen.append(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):  # bounded: the callback runs within a few loop turns
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    # A thread of its own: other suites (Playwright, IPython) may leave a loop on this one.
    worker = threading.Thread(target=asyncio.run, args=(main(),))
    worker.start()
    worker.join(30)
    assert seen and seen[0] != 0
