"""``letta-nb server``: run the embedded server in the foreground (uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from letta_nb.server.config import DEFAULT_KEEPALIVE, DEFAULT_RETENTION

TOKEN_ENV = "LETTA_NB_SERVER_TOKEN"


def default_db() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("letta_nb")) / "server.sqlite3"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8283, help="0 picks a free port")
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: user data)")
    parser.add_argument("--token", default=None, help=f"bearer token (or ${TOKEN_ENV})")
    parser.add_argument("--keepalive", type=float, default=DEFAULT_KEEPALIVE)
    parser.add_argument(
        "--retention",
        type=float,
        default=DEFAULT_RETENTION,
        help="seconds a finished run stays resumable",
    )
    parser.add_argument(
        "--port-file",
        type=Path,
        default=None,
        help="write the bound port here once listening (for launchers)",
    )


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        print(
            f"letta-nb server: refusing to listen on non-loopback host {args.host} without a "
            f"token (pass --token or set {TOKEN_ENV})",
            file=sys.stderr,
        )
        return 2
    import socket

    import uvicorn

    from letta_nb.server.app import create_app
    from letta_nb.server.config import ServerConfig

    config = ServerConfig(
        db_path=args.db or default_db(),
        token=token,
        keepalive_interval=args.keepalive,
        retention_seconds=args.retention,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    if args.port_file:
        args.port_file.write_text(str(port))
    print(
        f"letta-nb server listening on http://{args.host}:{port} (db {config.db_path})",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
    )
    server.run(sockets=[sock])
    return 0
