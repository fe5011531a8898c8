"""Command-line subcommands of privacy budgets (operators):

    cleanroom budget show [--config FILE] [--cleanroom NAME] [--analyst NAME] [--json]
    cleanroom budget reset [--config FILE] [--cleanroom NAME] --analyst NAME [--reason TEXT]
    cleanroom contributions [TABLE ...] [--config FILE] [--cleanroom NAME] [--token T] [--json]
                            [--epsilon E] [--rows 1,2,5] [--groups 1,2,4]

`show` lists, per analyst with a budget in the policy, the budget, what is
spent and remains in the current period, how many queries paid for it and
when it renews. `reset` appends a reset to the ledger (nothing is deleted):
charges before it no longer count. The ledger is the config's (state_dir or
store.postgres_dsn), so run this where the gateway's config is. Under zcdp
accounting `show` adds the rho spent and the rho that still fits; the epsilon
columns are then what the period's charges are worth (gateway/dp/accounting.py).

`contributions` (data owners: a member with the approver role of the owning
collaborator, never an analyst; the user is whoever owns the token, as for
`template`) reports how the rows of the owner's tables contribute and the bias
each candidate bound would cause (gateway/dp/contributions.py); with --epsilon,
a differentially private version of it (gateway/dp/contributions_dp.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from gateway.auth import user_for_token
from gateway.cli.collab import load_rooms
from gateway.dp.contributions_text import render
from gateway.dp.ledger import Account, Ledger
from gateway.dp.policy import budgets_for
from gateway.errors import GatewayError


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
    reset.add_argument("--cleanroom", help="clean room (default: the config's only one)")
    reset.add_argument("--analyst", required=True, help="analyst whose budget to reset")
    reset.add_argument("--reason", default="", help="why (kept in the ledger)")
    reset.set_defaults(handler=reset_command)
    for parser in (show, reset):
        parser.add_argument("--config", type=Path, help="gateway config (default: $CLEANROOM_CONFIG or config/demo.yaml)")

    report = subparsers.add_parser(
        "contributions", help="data owners: how your tables' rows contribute, and the bias of candidate bounds",
        description="For the policy author of a data owner: rows per unit per group, groups per unit, measure "
                    "quantiles, and the share clipped and bias each candidate max_rows_per_unit, "
                    "max_groups_per_unit, max_contributions_per_unit and measure bound would cause, on your own "
                    "tables only.",
    )
    report.add_argument("tables", nargs="*", metavar="TABLE", help="your tables (default: all your private tables)")
    report.add_argument("--config", type=Path, help="gateway config (default: $CLEANROOM_CONFIG or config/demo.yaml)")
    report.add_argument("--cleanroom", help="clean room (default: the config's only one)")
    report.add_argument("--token", help="your bearer token (default: $CLEANROOM_TOKEN)")
    report.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    report.add_argument("--epsilon", type=float, help="compute it under differential privacy at this epsilon "
                                                      "(recorded in the ledger as owner:<collaborator>)")
    report.add_argument("--rows", type=_bounds, help="candidate max_rows_per_unit values, e.g. 1,2,5,10")
    report.add_argument("--groups", type=_bounds, help="candidate max_groups_per_unit values, e.g. 1,2,4,8")
    report.add_argument("--totals", type=_bounds, help="candidate max_contributions_per_unit values, e.g. 10,20,30")
    report.add_argument("--profile", type=int, metavar="CEILING",
                        help="with --epsilon: print the tables' DP contribution profile as the policy's "
                             "privacy.profile holds it, counting units up to CEILING rows (the "
                             "max_contributions_per_unit the policy declares)")
    report.set_defaults(handler=contributions_command)


def _bounds(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from None
    if not values or any(v < 1 or v > 100_000 for v in values):
        raise argparse.ArgumentTypeError(f"candidate bounds must be integers from 1 to 100000, not {text!r}")
    return values


def contributions_command(args) -> int:
    from gateway.dp.contributions import report_for  # load cost only: DuckDB and OpenDP for this command

    loaded = load_rooms(args.config)
    if loaded == 1:
        return 1
    config, rooms = loaded
    if args.cleanroom is None and len(rooms) != 1:
        return _fail(f"name the clean room with --cleanroom ({', '.join(sorted(rooms))})", "contributions")
    room = rooms.get(args.cleanroom or next(iter(rooms)))
    if room is None:
        return _fail(f"no clean room {args.cleanroom!r} in {config.path}", "contributions")
    token = args.token or os.environ.get("CLEANROOM_TOKEN")
    user = user_for_token(config, token) if token else None
    if user is None:
        return _fail("a valid token is required (--token or $CLEANROOM_TOKEN)", "contributions")
    try:
        result = report_for(config, room, user, args.tables, epsilon=args.epsilon, rows=args.rows, groups=args.groups,
                            totals=args.totals, profile=args.profile)
    except GatewayError as error:
        hint = f" ({error.hint})" if getattr(error, "hint", None) else ""
        print(f"cleanroom contributions: {error.message} [{error.rule}]{hint}", file=sys.stderr)
        return 1
    except ValueError as error:
        return _fail(str(error), "contributions")
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def _fail(message: str, command: str = "budget") -> int:
    print(f"cleanroom {command}: {message}", file=sys.stderr)
    return 2


def _load(args):
    """(config, {room name: CleanRoom}, budgets_for), or an exit code."""
    loaded = load_rooms(args.config)
    if loaded == 1:
        return 1
    config, rooms = loaded
    if args.cleanroom is not None and args.cleanroom not in rooms:
        return _fail(f"no clean room {args.cleanroom!r} in {config.path} (there are: {', '.join(sorted(rooms))})")
    return config, rooms, budgets_for


def show_command(args) -> int:
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
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, rooms, budgets_for = loaded
    if args.cleanroom is None:
        if len(rooms) != 1:
            return _fail(f"name the clean room with --cleanroom ({', '.join(sorted(rooms))})")
        args.cleanroom = next(iter(rooms))
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
    with_rho = any(b.shows_rho for b in balances)  # zCDP: "spent" is what the summed rho is worth
    rows = [header + (("accounting", "rho spent", "rho left") if with_rho else ())]
    for b in balances:
        renews = b.renews_at.strftime("%Y-%m-%d %H:%M") if b.renews_at else "-"
        rows.append((
            b.account.cleanroom, b.account.analyst, _number(b.budget.epsilon), _number(b.spent.epsilon),
            _number(b.remaining.epsilon), _number(b.budget.delta), _number(b.spent.delta),
            _number(b.remaining.delta), str(b.queries), b.budget.refresh, renews,
        ) + ((b.budget.accounting, _number(b.spent.rho), _number(b.remaining.rho)) if with_rho else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
