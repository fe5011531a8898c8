"""The demo's approvals: at start, each owner's approver approves the demo
templates and aggregation rules, authenticated by its own token, through the
same Collaboration.approve an approver calling the CLI or HTTP
goes through."""

from __future__ import annotations

from pathlib import Path

from gateway.auth import user_for_token
from gateway.collab.approvals import Approval, Collaboration
from gateway.config import load_config
from gateway.policy.loader import load_policy

# (token, role shown at start) of the demo users; config/demo.yaml stores sha256 of each token.
DEMO_USERS = {
    "retailer_approver": "approver for retailer",
    "publisher_approver": "approver for publisher",
    "auditor": "auditor (GET /v1/audit, cleanroom audit tail)",
}
DEMO_APPROVER_TOKENS = ("retailer_approver", "publisher_approver")


def approve_demo(config_path: str | Path) -> list[Approval]:
    """Approve every template and every aggregation rule of the config's clean
    rooms as every demo approver that owns a table it reads or covers, through
    Collaboration.approve (idempotent: approving twice keeps the
    first). Returns the approvals, templates first (Approval.subject names each)."""
    config = load_config(config_path)
    collab = Collaboration.from_config(config)
    approvals = []
    for path in config.policies:
        room = load_policy(path)
        for token in DEMO_APPROVER_TOKENS:
            user = user_for_token(config, token)
            member = room.members.get(user) if user else None
            if member is None:
                continue
            approvals += [collab.approve(user, room, subject.name, front_end="demo", kind=subject.kind)
                          for subject in collab.subjects(room) if member.collaborator in subject.owners]
    return sorted(approvals, key=lambda approval: not approval.subject.startswith("template "))


def demo_users_text() -> str:
    return "\n".join(f"  {name:<20} token and password {name!r}: {role}" for name, role in DEMO_USERS.items())
