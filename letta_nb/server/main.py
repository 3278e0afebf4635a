"""``letta-nb server``: run the embedded server in the foreground (uvicorn).

Every refusal to start is one line on stderr and a non-zero exit: a public host without a
token (2), a database another server holds (3), a port that cannot be bound (4).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from letta_nb.server.config import (
    DEFAULT_KEEPALIVE,
    DEFAULT_RETENTION,
    HTTP_KEEP_ALIVE,
    TOOL_TIMEOUT,
)

TOKEN_ENV = "LETTA_NB_SERVER_TOKEN"
EXIT_NO_TOKEN = 2
EXIT_DB_IN_USE = 3
EXIT_NO_BIND = 4


def default_db() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("letta_nb")) / "server.sqlite3"


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn.

    It is created with ``proto=IPPROTO_TCP`` on purpose: asyncio sets ``TCP_NODELAY`` on the
    connections it accepts only when the socket says it is TCP, and without it every response
    written in more than one piece waited ~40 ms for a delayed ACK (Nagle): a REST call to the
    detached server took 44 ms instead of 0.6 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8283, help="0 picks a free port")
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: user data)")
    parser.add_argument(
        "--token", default=None, help=f"bearer token (prefer --token-file or ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--token-file", type=Path, default=None, help="read the bearer token from this file"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept this Host header name (loopback names are always accepted)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="accept requests from this browser origin, e.g. http://localhost:3000",
    )
    parser.add_argument("--keepalive", type=float, default=DEFAULT_KEEPALIVE)
    parser.add_argument(
        "--retention",
        type=float,
        default=DEFAULT_RETENTION,
        help="seconds a finished run stays resumable",
    )
    parser.add_argument(
        "--tool-timeout",
        type=float,
        default=TOOL_TIMEOUT,
        help="seconds a custom tool's process may run",
    )
    parser.add_argument(
        "--port-file",
        type=Path,
        default=None,
        help="write the bound port here once listening (for launchers)",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="rotating log file")
    parser.add_argument("--server-id", default=None, help="identity reported to launchers")


def _fail(message: str, code: int) -> int:
    print(f"letta-nb server: {message}", file=sys.stderr, flush=True)
    return code


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        return args.token_file.read_text().strip() or None
    return args.token or os.environ.get(TOKEN_ENV) or None


def run(args: argparse.Namespace) -> int:
    from letta_nb.server.guard import is_loopback

    os.umask(0o077)  # everything this server writes (database, logs, reports) is private
    try:
        token = _token(args)
    except OSError as exc:
        return _fail(f"cannot read the token file: {exc.strerror}", EXIT_NO_TOKEN)
    if not is_loopback(args.host) and not token:
        return _fail(
            f"refusing to listen on non-loopback host {args.host} without a token "
            f"(pass --token-file or set {TOKEN_ENV})",
            EXIT_NO_TOKEN,
        )

    import uvicorn

    from letta_nb.server import logs
    from letta_nb.server.app import create_app
    from letta_nb.server.config import ServerConfig, new_server_id
    from letta_nb.server.storage import DatabaseInUse, DbLock

    db_path = (args.db or default_db()).expanduser().resolve()
    try:
        lock = DbLock(db_path).acquire()
    except DatabaseInUse as exc:
        return _fail(f"{exc}; refusing to start a second one on it", EXIT_DB_IN_USE)
    except OSError as exc:
        return _fail(f"cannot open {db_path}: {exc.strerror}", EXIT_DB_IN_USE)
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        lock.release()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", EXIT_NO_BIND)
    port = sock.getsockname()[1]
    logs.configure(args.log_file)
    config = ServerConfig(
        db_path=db_path,
        token=token,
        keepalive_interval=args.keepalive,
        retention_seconds=args.retention,
        server_id=args.server_id or new_server_id(),
        host=args.host,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=tuple(args.allow_origin),
        tool_timeout=args.tool_timeout,
        db_lock=lock,
    )
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    logging.getLogger("letta_nb.server").info(
        "letta-nb server %s listening on http://%s:%d (db %s)",
        config.server_id,
        args.host,
        port,
        config.db_path,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=HTTP_KEEP_ALIVE,
        )
    )
    server.run(sockets=[sock])
    return 0
