"""A two-party clean room for the collaboration tests: visits (owner a) and
loyalty (owner b), a template joining both, approvers for each party, an
auditor, and an output template whose receiver is b."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from gateway.collab.subjects import KINDS, Kind
from tests.roomkit import Room, build_engine, private_table, simple_policy

SETUP = [
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, CASE WHEN i < 15 THEN 'north' ELSE 'south' END AS region "
    "FROM range(40) t(i)",
    "CREATE TABLE loyalty AS SELECT 'h' || i AS hh, 'gold' AS tier FROM range(40) t(i)",
]
JOINED_SQL = (
    "SELECT v.region, COUNT(DISTINCT v.hh) AS households FROM visits AS v "
    "JOIN loyalty AS l ON v.hh = l.hh WHERE l.tier = :tier GROUP BY v.region ORDER BY v.region"
)


def policy() -> dict:
    tables = {
        "visits": private_table("visits", {"hh": {"role": "join_key"}, "region": {"role": "dimension"}}, owner="a"),
        "loyalty": private_table("loyalty", {"hh": {"role": "join_key"}, "tier": {"role": "dimension"}}, owner="b"),
    }
    templates = {
        "joined": {"parameters": {"tier": {"type": "enum", "values": ["gold", "silver"]}}, "sql": JOINED_SQL},
        "only_a": {"sql": "SELECT region, COUNT(DISTINCT hh) AS n FROM visits GROUP BY region"},
        "to_b": {
            "parameters": {"tier": {"type": "enum", "values": ["gold", "silver"]}},
            "sql": JOINED_SQL,
            "output": {"name": "joined_for_b", "receivers": ["b"]},
        },
    }
    room = simple_policy(tables, joins=[("visits.hh", "loyalty.hh")], k=10, templates=templates)
    room["collaborators"]["c"] = {}
    room["members"] = {
        "appr_a": {"collaborator": "a", "roles": ["approver"]},
        "appr_b": {"collaborator": "b", "roles": ["approver", "author"]},
        "appr_c": {"collaborator": "c", "roles": ["approver"]},
        "audit_b": {"collaborator": "b", "roles": ["auditor"]},
    }
    return room


def withdraw_approvals(engine, templates: bool = True, rules: bool = False) -> None:
    """Take back the approvals build_engine recorded: of every template, of every rule."""
    rule_keys = KINDS[Kind.RULE].store_prefix + "%"  # rules' approvals are stored under "rule:<name>"
    if templates:
        engine.context.collab.store.execute("DELETE FROM approvals WHERE template NOT LIKE ?", (rule_keys,))
    if rules:
        engine.context.collab.store.execute("DELETE FROM approvals WHERE template LIKE ?", (rule_keys,))


def build(tmp_path: Path, room: dict | None = None, approved: bool = False, rules_approved: bool = True):
    """The engine over the room; no template approvals unless `approved`, and
    every owner's approval of every rule unless `rules_approved` is False."""
    engine = build_engine(tmp_path, copy.deepcopy(room or policy()), SETUP)
    withdraw_approvals(engine, templates=not approved, rules=not rules_approved)
    return engine


# As modules' ROOM (tests/conftest.py's fresh_engine builds one per test: approvals are state):
ROOM = Room(policy(), SETUP, prepare=withdraw_approvals)  # as build(tmp_path)
UNAPPROVED_RULES = Room(policy(), SETUP, prepare=functools.partial(withdraw_approvals, rules=True))


def rewrite_policy(tmp_path: Path, change) -> None:
    """Edit the policy file in place (change: dict -> None) and bump its mtime."""
    path = tmp_path / "policy.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def room_of(engine):
    return engine.context.cleanrooms["room"]
