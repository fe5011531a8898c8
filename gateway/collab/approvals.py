"""Proposing, approving and revoking templates and aggregation rules, and the
checks the engine makes before a template runs or a rule authorises a query.

Every decision about who may do what is made here from the policy (roles)
and the config (who a token belongs to); nothing a client sends is trusted.
An approval is (clean room, subject, canonical hash, collaborator, approver,
time); it counts only while the subject's current hash equals its hash.
Templates and rules share the machinery; rules are stored as "rule:<name>".

One difference: an edit that only tightens a rule (gateway.collab.canonical.
loosenings finds nothing) carries each owner's approval of the looser version
forward to the new hash, recorded in the audit log and in approval_carries.
Any other edit of a rule, and any edit of a template, needs new approvals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gateway.collab.canonical import (
    RULE_PREFIX,
    canonical_form,
    form_hash,
    loosenings,
    owners,
    rule_canonical_form,
    rule_tables,
    tables_touched,
    template_hash,
    tightenings,
)
from gateway.collab.store import Store
from gateway.config_model import GatewayConfig
from gateway.audit_log import AuditLog
from gateway.errors import GatewayError, Refused, UnknownTemplate
from gateway.policy.model import AggregationRule, CleanRoom, MemberRole, Template

# Kept beside the store's own tables (gateway.collab.store), created on first use.
RULE_SCHEMA = [
    # The canonical form behind every approved rule hash: what a later version is compared with.
    """CREATE TABLE IF NOT EXISTS canonical_forms (
        cleanroom TEXT NOT NULL, subject TEXT NOT NULL, sha256 TEXT NOT NULL, form TEXT NOT NULL,
        PRIMARY KEY (cleanroom, subject, sha256))""",
    # An approval carried forward to a tightened version: from which approval, and what tightened.
    """CREATE TABLE IF NOT EXISTS approval_carries (
        approval_sha256 TEXT PRIMARY KEY, carried_from TEXT NOT NULL, from_sha256 TEXT NOT NULL,
        tightened TEXT NOT NULL, carried_at TEXT NOT NULL)""",
]


class UnknownRule(GatewayError):
    sqlstate = "42704"  # undefined_object
    http_status = 404
    title = "Unknown rule"
    type_slug = "unknown-rule"


@dataclass(frozen=True)
class Approval:
    cleanroom: str
    template: str
    template_sha256: str
    collaborator: str
    approver: str
    approved_at: str
    approval_sha256: str
    carried_from: dict | None = None  # rules: the approval of a looser version this one continues

    def as_json(self) -> dict:
        return {"collaborator": self.collaborator, "approver": self.approver, "approved_at": self.approved_at,
                "approval_sha256": self.approval_sha256}

    @property
    def subject(self) -> str:
        """"template NAME" or "rule NAME"."""
        if self.template.startswith(RULE_PREFIX):
            return f"rule {self.template[len(RULE_PREFIX):]}"
        return f"template {self.template}"


@dataclass(frozen=True)
class ApprovalStatus:
    """Where the current version of a template or rule stands: who must approve it, who has."""

    KIND: ClassVar[str]
    cleanroom: str
    name: str
    sha256: str  # the current canonical hash: only approvals of it count
    owners: tuple[str, ...]  # collaborators who must approve
    approvals: tuple[Approval, ...]  # of the current hash (rules: carried forward ones included)
    missing: tuple[str, ...]  # owners who have not approved the current hash
    proposed_by: str | None = None

    @property
    def approved(self) -> bool:
        return not self.missing

    def as_json(self) -> dict:
        return {
            "cleanroom": self.cleanroom, self.KIND: self.name, f"{self.KIND}_sha256": self.sha256,
            "owners": list(self.owners), "approved": self.approved, "missing": list(self.missing),
            "proposed_by": self.proposed_by,
            "approvals": [self._approval_json(a) for a in self.approvals],
        }

    def _approval_json(self, approval: Approval) -> dict:
        return approval.as_json()


class TemplateStatus(ApprovalStatus):
    KIND = "template"

    @property
    def template(self) -> str:
        return self.name

    @property
    def template_sha256(self) -> str:
        return self.sha256


class RuleStatus(ApprovalStatus):
    KIND = "rule"

    @property
    def rule(self) -> str:
        return self.name

    @property
    def rule_sha256(self) -> str:
        return self.sha256

    def _approval_json(self, approval: Approval) -> dict:
        return {**approval.as_json(), "carried_from": approval.carried_from}


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
        self._rule_forms: dict[tuple[str, str, str], tuple[dict, str]] = {}  # ... rule -> (form, hash)
        for statement in RULE_SCHEMA:
            self.store.execute(statement)

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
        return TemplateStatus(room.name, name, digest, tuple(needed), approvals,
                              tuple(c for c in needed if c not in approved), self._proposer(room, name, digest))

    def _proposer(self, room: CleanRoom, subject: str, digest: str) -> str | None:
        """Who proposed this version of a template (or rule: RULE_PREFIX + name), if anyone."""
        proposal = self.store.query(
            "SELECT author FROM proposals WHERE cleanroom = ? AND template = ? AND template_sha256 = ?",
            (room.name, subject, digest),
        )
        return proposal[0]["author"] if proposal else None

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
        self._remember_form(room.name, name, digest, canonical_form(room, template))  # what a later version is diffed with
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

    # -- rules ---------------------------------------------------------------------
    def rule_form(self, room: CleanRoom, rule: AggregationRule) -> tuple[dict, str]:
        """The rule's canonical form and its hash (gateway.collab.canonical)."""
        key = (room.version, room.name, rule.name)
        if key not in self._rule_forms:
            form = rule_canonical_form(room, rule)
            self._rule_forms[key] = (form, form_hash(form))
        return self._rule_forms[key]

    def rule_hash(self, room: CleanRoom, rule: AggregationRule) -> str:
        return self.rule_form(room, rule)[1]

    def _rule(self, room: CleanRoom, name: str) -> AggregationRule:
        rule = room.rules.get(name)
        if rule is None:
            raise UnknownRule(f"no rule named {name!r}", rule="rule.unknown")
        return rule

    def _rule_approvals(self, room: CleanRoom, rule: AggregationRule, digest: str, needed) -> tuple[Approval, ...]:
        rows = self.store.query(
            "SELECT * FROM approvals WHERE cleanroom = ? AND template = ? AND template_sha256 = ? ORDER BY approved_at",
            (room.name, RULE_PREFIX + rule.name, digest),
        )
        return tuple(Approval(**row) for row in rows if row["collaborator"] in needed)

    def _checked_rule_approvals(self, room: CleanRoom, rule: AggregationRule) -> tuple[tuple[Approval, ...], set]:
        """Approvals of the current hash (carried-forward ones included: see carry_forward)."""
        needed = owners(room, rule_tables(rule))
        return self._rule_approvals(room, rule, self.rule_hash(room, rule), needed), needed

    def carry_forward(self, room: CleanRoom) -> None:
        """At policy load (engine start, reload, a command's load): for every rule an
        owner has not approved in its current version, continue that owner's approval
        of a looser version the current one only tightens. Never on the path of a
        statement, so EXPLAIN, a Describe or a query never writes approvals."""
        for rule in room.rules.values():
            digest, needed = self.rule_hash(room, rule), owners(room, rule_tables(rule))
            missing = needed - {a.collaborator for a in self._rule_approvals(room, rule, digest, needed)}
            if missing:
                self._carry_forward(room, rule, missing)

    def rule_status(self, room: CleanRoom, name: str) -> RuleStatus:
        rule = self._rule(room, name)
        approvals, needed = self._checked_rule_approvals(room, rule)
        digest = self.rule_hash(room, rule)
        carries = {
            row["approval_sha256"]: row for row in self.store.query(
                "SELECT c.* FROM approval_carries c JOIN approvals a ON a.approval_sha256 = c.approval_sha256 "
                "WHERE a.cleanroom = ? AND a.template = ? AND a.template_sha256 = ?",
                (room.name, RULE_PREFIX + name, digest),
            )
        }
        approvals = tuple(
            dataclasses.replace(a, carried_from={
                "approval_sha256": carries[a.approval_sha256]["carried_from"],
                "rule_sha256": carries[a.approval_sha256]["from_sha256"],
                "tightened": json.loads(carries[a.approval_sha256]["tightened"]),
            }) if a.approval_sha256 in carries else a
            for a in approvals
        )
        approved = {a.collaborator for a in approvals}
        return RuleStatus(room.name, name, digest, tuple(sorted(needed)), approvals,
                          tuple(sorted(needed - approved)), self._proposer(room, RULE_PREFIX + name, digest))

    def require_rule_approved(self, room: CleanRoom, rule: AggregationRule) -> tuple[Approval, ...]:
        """The approvals of the rule's current hash if every owner of every table it
        covers approved it (or a looser version of it); else Refused."""
        approvals, needed = self._checked_rule_approvals(room, rule)
        missing = sorted(needed - {a.collaborator for a in approvals})
        if missing:
            raise Refused(
                f"rule {rule.name} is not approved by {', '.join(missing)} "
                f"(current hash {self.rule_hash(room, rule)[:12]})",
                rule="rule.not_approved",
                hint=f"an approver of {', '.join(missing)} must approve this version of the rule: "
                f"cleanroom rule approve {rule.name} (cleanroom rule status {rule.name} shows what is missing)",
            )
        return approvals

    def propose_rule(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> RuleStatus:
        self._require_role(user, room, MemberRole.AUTHOR, "propose rules", name, front_end, kind="rule")
        rule = self._rule(room, name)
        digest = self.rule_hash(room, rule)
        self.store.execute(
            "INSERT INTO proposals (cleanroom, template, template_sha256, author, proposed_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, template, template_sha256) DO NOTHING",
            (room.name, RULE_PREFIX + name, digest, user, _now()),
        )
        self._audit_rule(user, room, name, digest, "proposed", front_end)
        return self.rule_status(room, name)

    def approve_rule(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> Approval:
        collaborator = self._require_role(user, room, MemberRole.APPROVER, "approve rules", name, front_end,
                                          kind="rule")
        rule = self._rule(room, name)
        needed = owners(room, rule_tables(rule))
        if collaborator not in needed:
            refusal = Refused(
                f"rule {name} covers no table of {collaborator}; only {', '.join(sorted(needed))} approve it",
                rule="rule.not_an_owner",
            )
            self._audit_refusal(user, room, name, front_end, refusal, kind="rule")
            raise refusal
        approval = self.record_approval(room, "rule", name, collaborator, user)
        self._audit_rule(user, room, name, approval.template_sha256, "approved", front_end,
                         approval_sha256=approval.approval_sha256)
        return approval

    def revoke_rule(self, user: str, room: CleanRoom, name: str, front_end: str = "cli") -> int:
        """Withdraw the user's collaborator's approvals of every version of the rule
        (carried forward ones included: nothing is left to carry)."""
        collaborator = self._require_role(user, room, MemberRole.APPROVER, "revoke approvals", name, front_end,
                                          kind="rule")
        rule = self._rule(room, name)
        removed = self.store.execute(
            "DELETE FROM approvals WHERE cleanroom = ? AND template = ? AND collaborator = ?",
            (room.name, RULE_PREFIX + name, collaborator),
        )
        self._audit_rule(user, room, name, self.rule_hash(room, rule), "revoked", front_end, revoked=removed)
        return removed

    def record_approval(self, room: CleanRoom, kind: str, name: str, collaborator: str, approver: str) -> Approval:
        """Store an approval of the current version of a template or rule, without
        checking roles and without an audit record: approve()/approve_rule() check
        and audit, test fixtures and policy tests call this directly. Approving
        twice keeps the first approval."""
        if kind == "rule":
            form, digest = self.rule_form(room, self._rule(room, name))
            subject = RULE_PREFIX + name
            self._remember_form(room.name, subject, digest, form)
        else:
            digest, subject = self.template_hash(room, self._template(room, name)), name
        fields = {
            "cleanroom": room.name, "template": subject, "template_sha256": digest,
            "collaborator": collaborator, "approver": approver, "approved_at": _now(),
        }
        approval = Approval(**fields, approval_sha256=_approval_hash(fields))
        self._insert_approval(approval)
        existing = self.store.query(
            "SELECT * FROM approvals WHERE cleanroom = ? AND template = ? AND template_sha256 = ? AND collaborator = ?",
            (room.name, subject, digest, collaborator),
        )
        return Approval(**existing[0]) if existing else approval

    def _insert_approval(self, approval: Approval) -> int:
        return self.store.execute(
            "INSERT INTO approvals (cleanroom, template, template_sha256, collaborator, approver, approved_at, "
            "approval_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, template, template_sha256, collaborator) DO NOTHING",
            (approval.cleanroom, approval.template, approval.template_sha256, approval.collaborator,
             approval.approver, approval.approved_at, approval.approval_sha256),
        )

    def _remember_form(self, cleanroom: str, subject: str, digest: str, form: dict) -> None:
        self.store.execute(
            "INSERT INTO canonical_forms (cleanroom, subject, sha256, form) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, subject, sha256) DO NOTHING",
            (cleanroom, subject, digest, json.dumps(form, sort_keys=True, separators=(",", ":"))),
        )

    def _carry_forward(self, room: CleanRoom, rule: AggregationRule, missing: set) -> bool:
        """For each owner in `missing`, continue its newest approval of a version the
        current one only tightens. Returns whether any approval was carried."""
        form, digest = self.rule_form(room, rule)
        subject = RULE_PREFIX + rule.name
        earlier = self.store.query(
            "SELECT a.*, f.form FROM approvals a JOIN canonical_forms f ON f.cleanroom = a.cleanroom "
            "AND f.subject = a.template AND f.sha256 = a.template_sha256 "
            "WHERE a.cleanroom = ? AND a.template = ? AND a.template_sha256 <> ? ORDER BY a.approved_at DESC",
            (room.name, subject, digest),
        )
        carried = False
        for collaborator in sorted(missing):
            for row in (r for r in earlier if r["collaborator"] == collaborator):
                before = json.loads(row["form"])
                if loosenings(before, form):
                    continue
                self._remember_form(room.name, subject, digest, form)
                fields = {
                    "cleanroom": room.name, "template": subject, "template_sha256": digest,
                    "collaborator": collaborator, "approver": row["approver"], "approved_at": _now(),
                }
                approval = Approval(**fields, approval_sha256=_approval_hash(
                    {**fields, "carried_from": row["approval_sha256"]}))
                tightened = tightenings(before, form)
                if self._insert_approval(approval):  # another worker may have carried it first
                    self.store.execute(
                        "INSERT INTO approval_carries (approval_sha256, carried_from, from_sha256, tightened, "
                        "carried_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (approval_sha256) DO NOTHING",
                        (approval.approval_sha256, row["approval_sha256"], row["template_sha256"],
                         json.dumps(tightened), approval.approved_at),
                    )
                    self._audit_rule(row["approver"], room, rule.name, digest, "carried_forward", "engine",
                                     collaborator=collaborator, approval_sha256=approval.approval_sha256,
                                     carried_from=row["approval_sha256"], from_sha256=row["template_sha256"],
                                     tightened=tightened)
                carried = True
                break
        return carried

    def _audit_rule(self, user, room, name, digest, decision, front_end, **extra) -> None:
        self.audit.append({
            "time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
            "policy_version": room.version, "front_end": front_end, "decision": decision,
            "rule": f"rule.{decision}", "aggregation_rule": name, "rule_sha256": digest, **extra,
        })

    def _require_role(self, user: str, room: CleanRoom, role: MemberRole, action: str, template: str,
                      front_end: str, kind: str = "template") -> str:
        if not room.has_role(user, role):
            refusal = Refused(
                f"{user} may not {action} in clean room {room.name} (needs the {role.value} role)",
                rule=f"collab.not_{role.value}",
                hint="roles are granted under members: in the policy",
            )
            self._audit_refusal(user, room, template, front_end, refusal, kind=kind)
            raise refusal
        return room.members[user].collaborator

    def _audit_refusal(self, user, room, name, front_end, refusal: Refused, kind: str = "template") -> None:
        self.audit.append({
            "time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
            "policy_version": room.version, "front_end": front_end, "decision": "refused", "rule": refusal.rule,
            "template" if kind == "template" else "aggregation_rule": name, "message": refusal.message,
        })

    def _audit(self, user, room, template, digest, decision, front_end, **extra) -> None:
        self.audit.append({
            "time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
            "policy_version": room.version, "front_end": front_end, "decision": decision,
            "rule": f"template.{decision}", "template": template, "template_sha256": digest, **extra,
        })
