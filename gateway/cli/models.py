"""`cleanroom train`: fit a differentially private model on a training template's rows
(docs/models.md#training), as POST /v1/train does. The user is whoever owns the token
(--token or $CLEANROOM_TOKEN), as for HTTP; the epsilon is charged to that analyst's budget.

Prints the new model's declaration, ready for the policy's `models:` section."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from gateway.auth import user_for_token
from gateway.cli.collab import _default_config
from gateway.config import load_config
from gateway.engine import Engine
from gateway.errors import GatewayError


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="analysts: fit a DP regression on a training template's rows (docs/models.md#training)",
        description="Runs a training template (approved by every owner), charges --epsilon to your budget, "
                    "fits a differentially private logistic or linear regression on its rows, which are never "
                    "released, and prints the model's declaration for the policy's models: section.")
    train.add_argument("template", help="the training template")
    train.add_argument("--name", required=True, help="the new model's name")
    train.add_argument("--epsilon", type=float, required=True, help="privacy loss of the fit, charged to you")
    train.add_argument("--params", default="{}", help="the template's parameters as a JSON object")
    train.add_argument("--cleanroom", help="clean room (default: the config's only one)")
    train.add_argument("--token", help="your bearer token (default: $CLEANROOM_TOKEN)")
    train.add_argument("--config", type=Path, help="gateway config (default: $CLEANROOM_CONFIG or config/demo.yaml)")
    train.set_defaults(handler=train_command)


def train_command(args) -> int:
    config = load_config(args.config or _default_config())
    token = args.token or os.environ.get("CLEANROOM_TOKEN")
    user = user_for_token(config, token) if token else None
    if user is None:
        return _fail("a valid token is required (--token or $CLEANROOM_TOKEN)")
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as error:
        return _fail(f"--params is not JSON: {error}")
    engine = Engine(config)
    try:
        rooms = engine.cleanrooms_for(user)
        if args.cleanroom is None and len(rooms) != 1:
            return _fail(f"name the clean room with --cleanroom ({', '.join(rooms) or 'none of yours'})")
        receipt = engine.train(user, args.cleanroom or rooms[0], args.template, params, args.name, args.epsilon)
    except GatewayError as error:
        return _fail(f"{error.message} [{error.rule}]")
    finally:
        engine.close()
    row = receipt.table.to_pylist()[0]
    print(f"# {receipt.notices[0]}")
    print(f"# epsilon {row['epsilon']} charged to {user}; add to the policy:")
    print(yaml.safe_dump({"models": json.loads(row["declaration"])}, sort_keys=False), end="")
    return 0


def _fail(message: str) -> int:
    print(f"cleanroom train: {message}", file=sys.stderr)
    return 1
