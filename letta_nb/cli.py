"""``letta-nb``: a thin argparse dispatcher; each subcommand lives with its feature.

``letta-nb server`` runs a server in the foreground; ``letta-nb status`` and ``letta-nb stop``
show and stop the detached server that ``connect()`` starts for a state dir.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    from letta_nb.core.cursor import default_state_dir

    return default_state_dir() / "server"


def status(args: argparse.Namespace) -> int:
    """Exit 0 and one line if the state dir's server runs (and proves who it is), else 1."""
    from letta_nb.server.launcher import server_status

    state = _state_dir(args)
    info = server_status(state)
    if info is None:
        print(f"no letta-nb server is running for {state}")
        return 1
    print(f"letta-nb server running at {info.base_url} (pid {info.pid}, log {info.log_path})")
    return 0


def stop(args: argparse.Namespace) -> int:
    from letta_nb.server.launcher import ServerStartError, stop_server

    state = _state_dir(args)
    try:
        stopped = stop_server(state)
    except (OSError, ServerStartError) as exc:
        print(f"letta-nb stop: {exc}", file=sys.stderr)
        return 2
    print(
        f"stopped the letta-nb server of {state}"
        if stopped
        else f"no letta-nb server was running for {state}"
    )
    return 0 if stopped else 1


def build_parser() -> argparse.ArgumentParser:
    from letta_nb.server import main as server_main

    parser = argparse.ArgumentParser(prog="letta-nb")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the embedded Letta-compatible server")
    server_main.add_arguments(server)
    server.set_defaults(func=server_main.run)
    for name, func, text in (
        ("status", status, "show the embedded server that connect() starts"),
        ("stop", stop, "stop the embedded server that connect() starts"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--state-dir",
            default=None,
            help="the server's state dir (default: $LETTA_NB_STATE_DIR/server)",
        )
        cmd.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
