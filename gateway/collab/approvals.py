"""Proposing, approving and revoking templates, and the check the engine makes
before a template runs.

Every decision about who may do what is made here from the policy (roles)
and the config (who a token belongs to); nothing a client sends is trusted.
An approval is (clean room, template, canonical hash, collaborator, approver,
time); it counts only while the template's current hash equals its hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.collab.canonical import owners, tables_touched, template_hash
from gateway.collab.store import Store
from gateway.config_model import GatewayConfig
from gateway.engine.audit_log import AuditLog
from gateway.errors import Refused, UnknownTemplate
from gateway.policy.model import CleanRoom, MemberRole, Template


@dataclass(frozen=True)
class Approval:
    cleanroom: str
    template: str
    template_sha256: str
    collaborator: str
    approver: str
    approved_at: str
    approval_sha256: str


@dataclass(frozen=True)
class TemplateStatus:
    cleanroom: str
    template: str
    template_sha256: str  # the current canonical hash: only approvals of it count
    owners: tuple[str, ...]  # collaborators who must approve
    approvals: tuple[Approval, ...]  # of the current hash
    missing: tuple[str, ...]  # owners who have not approved the current hash
    proposed_by: str | None = None

    @property
    def approved(self) -> bool:
        return not self.missing

    def as_json(self) -> dict:
        return {
            "cleanroom": self.cleanroom, "template": self.template, "template_sha256": self.template_sha256,
            "owners": list(self.owners), "approved": self.approved, "missing": list(self.missing),
            "proposed_by": self.proposed_by,
            "approvals": [
                {"collaborator": a.collaborator, "approver": a.approver, "approved_at": a.approved_at,
                 "approval_sha256": a.approval_sha256}
                for a in self.approvals
            ],
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _approval_hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Collaboration:
    """Approvals and outputs over one store; actions are audited like statements."""

    def __init__(self, store: Store, audit: AuditLog, output_retention_hours: float = 720.0):
        self.store = store
        self.audit = audit
        self.output_retention_hours = output_retention_hours
        self._hashes: dict[tuple[str, str, str], str] = {}  # (policy version, room, template) -> hash

    @classmethod
    def from_config(cls, config: GatewayConfig, audit: AuditLog | None = None) -> "Collaboration":
        audit = audit or AuditLog(Path(config.state_dir) / "audit.jsonl")
        return cls(Store.from_config(config), audit, config.store.output_retention_hours)

    # -- identity of a template -------------------------------------------------
    def template_hash(self, room: CleanRoom, template: Template) -> str:
        key = (room.version, room.name, template.name)  # a policy version never changes, so neither does its hash
        if key not in self._hashes:
            self._hashes[key] = template_hash(room, template)
        return self._hashes[key]

    def _template(self, room: CleanRoom, name: str) -> Template:
        template = room.templates.get(name)
        if template is None:
            raise UnknownTemplate(f"no template named {name!r}", rule="template.unknown")
        return template

    # -- what the engine asks ----------------------------------------------------
    def status(self, room: CleanRoom, name: str) -> TemplateStatus:
        template = self._template(room, name)
        digest = self.template_hash(room, template)
        needed = sorted(owners(room, tables_touched(room, template)))
        rows = self.store.query(
            "SELECT * FROM approvals WHERE cleanroom = ? AND template = ? AND template_sha256 = ? ORDER BY approved_at",
            (room.name, name, digest),
        )
        approvals = tuple(Approval(**row) for row in rows if row["collaborator"] in needed)
        approved = {a.collaborator for a in approvals}
        proposal = self.store.query(
            "SELECT author FROM proposals WHERE cleanroom = ? AND template = ? AND template_sha256 = ?",
            (room.name, name, digest),
        )
        return TemplateStatus(
            room.name, name, digest, tuple(needed), approvals,
            tuple(c for c in needed if c not in approved), proposal[0]["author"] if proposal else None,
        )

    def require_approved(self, room: CleanRoom, template: Template, tables: frozenset[str]) -> TemplateStatus:
        """The template's status if every owner of `tables` approved its current hash; else Refused."""
        status = self.status(room, template.name)
        approved = {a.collaborator for a in status.approvals}
        missing = sorted(owners(room, tables) - approved)
        if missing:
            raise Refused(
                f"template {template.name} is not approved by {', '.join(missing)} "
                f"(current hash {status.template_sha256[:12]})",
                rule="template.not_approved",
                hint="every owner of every table it reads must approve this exact version: "
                f"cleanroom template approve {template.name}",
            )
        return status

    # -- what collaborators do ---------------------------------------------------
    def propose(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> TemplateStatus:
        self._require_role(user, room, MemberRole.AUTHOR, "propose templates", name, front_end)
        template = self._template(room, name)
        digest = self.template_hash(room, template)
        self.store.execute(
            "INSERT INTO proposals (cleanroom, template, template_sha256, author, proposed_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, template, template_sha256) DO NOTHING",
            (room.name, name, digest, user, _now()),
        )
        self._audit(user, room, name, digest, "proposed", front_end)
        return self.status(room, name)

    def approve(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> Approval:
        collaborator = self._require_role(user, room, MemberRole.APPROVER, "approve templates", name, front_end)
        template = self._template(room, name)
        needed = owners(room, tables_touched(room, template))
        if collaborator not in needed:
            refusal = Refused(
                f"template {name} reads no table of {collaborator}; only {', '.join(sorted(needed))} approve it",
                rule="template.not_an_owner",
            )
            self._audit_refusal(user, room, name, front_end, refusal)
            raise refusal
        digest = self.template_hash(room, template)
        fields = {
            "cleanroom": room.name, "template": name, "template_sha256": digest,
            "collaborator": collaborator, "approver": user, "approved_at": _now(),
        }
        approval = Approval(**fields, approval_sha256=_approval_hash(fields))
        self.store.execute(
            "INSERT INTO approvals (cleanroom, template, template_sha256, collaborator, approver, approved_at, "
            "approval_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, template, template_sha256, collaborator) DO NOTHING",
            (approval.cleanroom, approval.template, approval.template_sha256, approval.collaborator,
             approval.approver, approval.approved_at, approval.approval_sha256),
        )
        existing = [a for a in self.status(room, name).approvals if a.collaborator == collaborator]
        approval = existing[0] if existing else approval  # approving twice keeps the first approval
        self._audit(user, room, name, digest, "approved", front_end, approval_sha256=approval.approval_sha256)
        return approval

    def revoke(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> int:
        """Withdraw the user's collaborator's approvals of every version of the template."""
        collaborator = self._require_role(user, room, MemberRole.APPROVER, "revoke approvals", name, front_end)
        template = self._template(room, name)
        removed = self.store.execute(
            "DELETE FROM approvals WHERE cleanroom = ? AND template = ? AND collaborator = ?",
            (room.name, name, collaborator),
        )
        self._audit(user, room, name, self.template_hash(room, template), "revoked", front_end, revoked=removed)
        return removed

    def _require_role(self, user: str, room: CleanRoom, role: MemberRole, action: str, template: str,
                      front_end: str) -> str:
        if not room.has_role(user, role):
            refusal = Refused(
                f"{user} may not {action} in clean room {room.name} (needs the {role.value} role)",
                rule=f"collab.not_{role.value}",
                hint="roles are granted under members: in the policy",
            )
            self._audit_refusal(user, room, template, front_end, refusal)
            raise refusal
        return room.members[user].collaborator

    def _audit_refusal(self, user, room, template, front_end, refusal: Refused) -> None:
        self.audit.append({
            "time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
            "policy_version": room.version, "front_end": front_end, "decision": "refused", "rule": refusal.rule,
            "template": template, "message": refusal.message,
        })

    def _audit(self, user, room, template, digest, decision, front_end, **extra) -> None:
        self.audit.append({
            "time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
            "policy_version": room.version, "front_end": front_end, "decision": decision,
            "rule": f"template.{decision}", "template": template, "template_sha256": digest, **extra,
        })
