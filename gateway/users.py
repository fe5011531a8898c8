"""`cleanroom user add NAME`: credentials for the config's users section.

The gateway stores only a token's sha256 and a SCRAM-SHA-256 verifier: the
secrets are printed once, here, and never written anywhere by the gateway.
"""

from __future__ import annotations

import secrets
import sys

from gateway.auth import hash_token
from gateway.pgwire.scram import make_verifier


def register(subparsers) -> None:
    user = subparsers.add_parser("user", help="make credentials for a user").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="print a new token and password, and the config lines that store their hashes")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input instead of generating one")
    add.set_defaults(handler=_add)


def _add(args) -> int:
    token = secrets.token_urlsafe(32)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else secrets.token_urlsafe(18)
    if not password:
        print("error: empty password", file=sys.stderr)
        return 2
    print(f"# token for {args.name} (HTTP bearer): {token}", file=sys.stderr)
    if not args.password_stdin:
        print(f"# password for {args.name} (Postgres clients): {password}", file=sys.stderr)
    print(f"  {args.name}:")
    print(f"    token_sha256: {hash_token(token)}")
    print(f"    scram_sha256: {make_verifier(password)}")
    return 0
