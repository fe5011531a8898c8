"""`cleanroom` command line: the top layer. The commands of the lower layers'
features live here (`cli/collab.py`, `cli/dp.py`, `cli/policy_check.py`,
`cli/policy_tests.py`); the servers and the demo register their own."""

from __future__ import annotations

import argparse
import sys

from gateway import demo, users
from gateway.cli import collab as collab_cli
from gateway.cli import dp as dp_cli
from gateway.cli import models as models_cli
from gateway.cli import policy_check
from gateway.http import serve
from gateway.pgwire import server as pg_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cleanroom", description="Privacy-preserving SQL gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    policy_check.register(sub)  # cleanroom policy check PATH...
    serve.register(sub)  # cleanroom serve --config FILE [--workers N]
    pg_server.register(sub)  # cleanroom pg --config FILE [--port] [--workers N]
    users.register(sub)  # cleanroom user add NAME
    demo.register(sub)  # cleanroom demo [--http-port] [--pg-port]
    collab_cli.register(sub)  # cleanroom template ..., cleanroom audit verify|tail, cleanroom policy test
    dp_cli.register(sub)  # cleanroom budget show|reset, cleanroom contributions
    models_cli.register(sub)  # cleanroom train TEMPLATE --name --epsilon
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
