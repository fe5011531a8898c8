"""Command-line subcommands of collaboration:

    cleanroom template propose|approve|revoke|status NAME [--config FILE] [--cleanroom ROOM]
    cleanroom rule propose|approve|revoke|status NAME [--config FILE] [--cleanroom ROOM]
    cleanroom audit verify [--config FILE | --log FILE]
    cleanroom audit tail [-n N] [--config FILE | --log FILE]
    cleanroom policy test [PATH ...] [--config FILE]

Template and rule actions authenticate like HTTP: the user is whoever owns the token
(--token, or $CLEANROOM_TOKEN), and its roles come from the policy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gateway.auth import user_for_token
from gateway.collab.approvals import Collaboration
from gateway.audit_log import AuditLog
from gateway.audit_log.reading import read_chain
from gateway.collab.audit_tools import tail, verify_file, verify_room
from gateway.config import load_config
from gateway.demo import repo_dir
from gateway.errors import GatewayError, PolicyInvalid
from gateway.policy.loader import load_policy
from gateway.storage import Database


def _default_config() -> Path:
    return Path(os.environ.get("CLEANROOM_CONFIG") or repo_dir() / "config" / "demo.yaml")


def register(subparsers: argparse._SubParsersAction) -> None:
    for kind, what in (("template", "templates"), ("rule", "aggregation rules")):
        group = subparsers.add_parser(kind, help=f"propose, approve, revoke {what}; show their approvals")
        actions = group.add_subparsers(dest=f"{kind}_command", required=True)
        for action, text in (
            ("propose", f"propose the {kind}'s current version for approval (author role)"),
            ("approve", f"approve the {kind}'s current version for your collaborator (approver role)"),
            ("revoke", f"withdraw your collaborator's approvals of the {kind} (approver role)"),
            ("status", f"show the {kind}'s current hash, owners, approvals and who is missing"),
        ):
            parser = actions.add_parser(action, help=text, description=text)
            parser.add_argument("name", help=f"{kind} name")
            parser.add_argument("--config", type=Path,
                                help="gateway config (default: $CLEANROOM_CONFIG or config/demo.yaml)")
            parser.add_argument("--cleanroom", help="clean room (default: the config's only one)")
            parser.add_argument("--token", help="your bearer token (default: $CLEANROOM_TOKEN)")
            parser.set_defaults(handler=approval_command, kind=kind, action=action)

    audit = subparsers.add_parser("audit", help="verify and read the audit log")
    audit_actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_actions.add_parser("verify", help="check every chain and its anchor (with PostgreSQL, every host's); "
                                                     "exit 1 and the line numbers on tampering")
    tail = audit_actions.add_parser("tail", help="print the last records of all chains, merged, one JSON object per line")
    tail.add_argument("-n", type=int, default=10, help="how many records (default 10)")
    for parser in (verify, tail):
        parser.add_argument("--config", type=Path, help="gateway config whose state_dir holds the audit chains")
        parser.add_argument("--log", type=Path, help="one chain file (state_dir/audit/*.jsonl, or an old audit.jsonl)")
    verify.set_defaults(handler=audit_verify)
    tail.set_defaults(handler=audit_tail)

    policy = subparsers.choices.get("policy")  # `cleanroom policy` belongs to gateway.cli.policy_check
    if policy is None:
        policy = subparsers.add_parser("policy", help="work with policy files")
        policy.add_subparsers(dest="policy_command", required=True)
    policy_actions = next(a for a in policy._actions if isinstance(a, argparse._SubParsersAction))
    test = policy_actions.add_parser(
        "test", help="run policy test cases (x.tests.yaml beside x.yaml)",
        description="Run the YAML test cases kept beside policies; exit 1 on any failure.",
    )
    test.add_argument("paths", nargs="*", metavar="PATH", help="a policy, its .tests.yaml, or a folder")
    test.add_argument("--config", help="gateway config whose sources the cases compile against")
    test.set_defaults(handler=_policy_test)


def _policy_test(args) -> int:
    from gateway.cli import policy_tests  # load cost only: it compiles through the engine (DuckDB, OpenDP)

    return policy_tests.main(args)


def _fail(message: str) -> int:
    print(f"cleanroom: {message}", file=sys.stderr)
    return 2


def load_rooms(config_path: Path | None):
    """(config, {name: CleanRoom}) for a command's --config, or exit code 1 after
    printing every policy problem."""
    try:
        config = load_config(config_path or _default_config())
        return config, {room.name: room for room in map(load_policy, config.policies)}
    except PolicyInvalid as error:
        print("\n".join(error.problems), file=sys.stderr)
        return 1


def approval_command(args) -> int:
    """`cleanroom template|rule ACTION NAME`: Collaboration.status or .act, as HTTP and the console call them."""
    loaded = load_rooms(args.config)
    if loaded == 1:
        return 1
    config, rooms = loaded
    if args.cleanroom is None and len(rooms) != 1:
        return _fail(f"name the clean room with --cleanroom ({', '.join(sorted(rooms))})")
    room = rooms.get(args.cleanroom or next(iter(rooms)))
    if room is None:
        return _fail(f"no clean room {args.cleanroom!r} in {config.path}")
    collab = Collaboration.from_config(config)
    collab.carry_forward(room)  # as the engine does at policy load: approvals of tightened rules continue
    try:
        if args.action == "status":
            print(json.dumps(collab.status(room, args.name, args.kind).as_json(), indent=2))
            return 0
        token = args.token or os.environ.get("CLEANROOM_TOKEN")
        user = user_for_token(config, token) if token else None
        if user is None:
            return _fail("a valid token is required (--token or $CLEANROOM_TOKEN)")
        result = collab.act(user, room, args.kind, args.name, args.action)
    except GatewayError as error:
        print(f"cleanroom {args.kind} {args.action}: {error.message} [{error.rule}]", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _audit_config(args):
    return load_config(args.config or _default_config())


def audit_verify(args) -> int:
    if args.log:  # one file, against the store beside its state folder if there is one
        problems, lines, chains, count = verify_file(args.log)
    else:
        config = _audit_config(args)
        problems, lines, chains, count = verify_room(Path(config.state_dir), Database.for_config(config, "collab.sqlite"))
    for line in lines:
        print(line)
    if problems:
        print(f"audit: FAILED, {len(problems)} problem(s) in {chains} chain(s)")
        return 1
    print(f"audit: ok ({chains} chain(s), {count} records)")
    return 0


def audit_tail(args) -> int:
    try:
        if args.log:
            records = read_chain(args.log, numbered=True)[-args.n:] if args.n > 0 else []
        else:
            records = tail(AuditLog.for_config(_audit_config(args)), args.n)
        for record in records:
            print(json.dumps(record, sort_keys=True), flush=True)
    except BrokenPipeError:  # `cleanroom audit tail | head` closed the pipe: not an error
        sys.stdout = open(os.devnull, "w")
    return 0
