"""`cleanroom` command line: each subcommand lives in the module that owns it."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cleanroom", description="Privacy-preserving SQL gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    from gateway import demo
    from gateway.collab import cli as collab_cli
    from gateway.dp import cli as dp_cli
    from gateway import users
    from gateway.http import serve
    from gateway.pgwire import server as pg_server
    from gateway.policy import check

    check.register(sub)  # cleanroom policy check PATH...
    serve.register(sub)  # cleanroom serve --config FILE [--workers N]
    pg_server.register(sub)  # cleanroom pg --config FILE [--port] [--workers N]
    users.register(sub)  # cleanroom user add NAME
    demo.register(sub)  # cleanroom demo [--http-port] [--pg-port]
    collab_cli.register(sub)  # cleanroom template ..., cleanroom audit verify|tail, cleanroom policy test
    dp_cli.register(sub)  # cleanroom budget show|reset, cleanroom contributions
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
