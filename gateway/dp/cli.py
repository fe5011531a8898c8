"""Command-line subcommands of privacy budgets (operators):

    cleanroom budget show [--config FILE] [--cleanroom NAME] [--analyst NAME] [--json]
    cleanroom budget reset [--config FILE] --cleanroom NAME --analyst NAME [--reason TEXT]

`show` lists, per analyst with a budget in the policy, the budget, what is
spent and remains in the current period, how many queries paid for it and
when it renews. `reset` appends a reset to the ledger (nothing is deleted):
charges before it no longer count. The ledger is the config's (state_dir or
store.postgres_dsn), so run this where the gateway's config is.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    budget = subparsers.add_parser("budget", help="show and reset analysts' privacy budgets")
    actions = budget.add_subparsers(dest="budget_command", required=True)
    show = actions.add_parser(
        "show", help="budget, spent, remaining and queries per analyst",
        description="Show each analyst's privacy budget in the current period.",
    )
    show.add_argument("--cleanroom", help="only this clean room (default: all in the config)")
    show.add_argument("--analyst", help="only this analyst")
    show.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    show.set_defaults(handler=show_command)
    reset = actions.add_parser(
        "reset", help="forgive what an analyst has spent (recorded, never deleted)",
        description="Record a reset: the analyst's charges so far stop counting against the budget.",
    )
    reset.add_argument("--cleanroom", required=True, help="clean room")
    reset.add_argument("--analyst", required=True, help="analyst whose budget to reset")
    reset.add_argument("--reason", default="", help="why (kept in the ledger)")
    reset.set_defaults(handler=reset_command)
    for parser in (show, reset):
        parser.add_argument("--config", type=Path, help="gateway config (default: $CLEANROOM_CONFIG or config/demo.yaml)")


def _fail(message: str) -> int:
    print(f"cleanroom budget: {message}", file=sys.stderr)
    return 2


def _load(args):
    """(config, {room name: CleanRoom}, budgets_for), or an exit code."""
    from gateway.collab.cli import load_rooms
    from gateway.dp.policy import budgets_for

    loaded = load_rooms(args.config)
    if loaded == 1:
        return 1
    config, rooms = loaded
    if args.cleanroom is not None and args.cleanroom not in rooms:
        return _fail(f"no clean room {args.cleanroom!r} in {config.path} (there are: {', '.join(sorted(rooms))})")
    return config, rooms, budgets_for


def show_command(args) -> int:
    from gateway.dp.ledger import Account, Ledger

    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, rooms, budgets_for = loaded
    ledger = Ledger.from_config(config)
    balances = []
    for name in sorted(rooms):
        if args.cleanroom is not None and name != args.cleanroom:
            continue
        for analyst, budget in sorted(budgets_for(rooms[name]).items()):
            if args.analyst is None or analyst == args.analyst:
                balances.append(ledger.balance(Account(name, analyst), budget))
    if args.analyst is not None and not balances:
        return _fail(f"analyst {args.analyst!r} has no privacy budget in {args.cleanroom or 'any clean room'}")
    if args.json:
        print(json.dumps([b.as_json() for b in balances], indent=2))
        return 0
    if not balances:
        print("no analyst has a privacy budget in these clean rooms")
        return 0
    print(_table(balances))
    return 0


def reset_command(args) -> int:
    from gateway.dp.ledger import Account, Ledger

    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, rooms, budgets_for = loaded
    budget = budgets_for(rooms[args.cleanroom]).get(args.analyst)
    if budget is None:
        return _fail(f"analyst {args.analyst!r} has no privacy budget in clean room {args.cleanroom!r}")
    ledger = Ledger.from_config(config)
    account = Account(args.cleanroom, args.analyst)
    ledger.reset(account, by=_operator(), reason=args.reason)
    print(f"reset the privacy budget of {args.analyst!r} in clean room {args.cleanroom!r}")
    print(_table([ledger.balance(account, budget)]))
    return 0


def _operator() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:  # no user name in this environment (e.g. an unknown uid in a container)
        return "operator"


def _number(value: float) -> str:
    return str(value)  # shortest form that reads back as the same float


def _table(balances) -> str:
    header = ("cleanroom", "analyst", "epsilon", "spent", "remaining", "delta", "delta spent", "delta left",
              "queries", "refresh", "renews (UTC)")
    rows = [header]
    for b in balances:
        renews = b.renews_at.strftime("%Y-%m-%d %H:%M") if b.renews_at else "-"
        rows.append((
            b.account.cleanroom, b.account.analyst, _number(b.budget.epsilon), _number(b.spent.epsilon),
            _number(b.remaining.epsilon), _number(b.budget.delta), _number(b.spent.delta),
            _number(b.remaining.delta), str(b.queries), b.budget.refresh, renews,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
