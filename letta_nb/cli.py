"""``letta-nb``: a thin argparse dispatcher; each subcommand lives with its feature."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from letta_nb.server import main as server_main

    parser = argparse.ArgumentParser(prog="letta-nb")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the embedded Letta-compatible server")
    server_main.add_arguments(server)
    server.set_defaults(func=server_main.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
