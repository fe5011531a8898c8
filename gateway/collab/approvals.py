"""Proposing, approving and revoking approval subjects (templates and
aggregation rules, gateway.collab.subjects), and the check the engine makes
before a template runs or a rule authorises a query.

Every decision about who may do what is made here from the policy (roles)
and the config (who a token belongs to); nothing a client sends is trusted.
An approval is (clean room, subject, canonical hash, collaborator, approver,
time); it counts only while the subject's current hash equals its hash.
Each action is written once for both kinds: the CLI, the HTTP API and the
console all call act() (or status()), and the engine calls require_approved().

One difference between the kinds (KindFacts.carries_forward): an edit that only
tightens a rule (gateway.collab.canonical.loosenings finds nothing) carries
each owner's approval of the looser version forward to the new hash, recorded
in the audit log and in approval_carries. Any other edit of a rule, and any
edit of a template, needs new approvals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from gateway.audit_log import AuditLog
from gateway.collab.canonical import loosenings, subject_owners, tightenings
from gateway.collab.store import Store
from gateway.collab.subjects import KINDS, Kind, Subject, subject_names, subject_of
from gateway.config_model import GatewayConfig
from gateway.errors import BadParameter, Refused
from gateway.policy.model import CleanRoom, MemberRole

# Kept beside the store's own tables (gateway.collab.store), created on first use.
RULE_SCHEMA = [
    # The canonical form behind every approved hash: what a later version is compared with.
    """CREATE TABLE IF NOT EXISTS canonical_forms (
        cleanroom TEXT NOT NULL, subject TEXT NOT NULL, sha256 TEXT NOT NULL, form TEXT NOT NULL,
        PRIMARY KEY (cleanroom, subject, sha256))""",
    # An approval carried forward to a tightened version: from which approval, and what tightened.
    """CREATE TABLE IF NOT EXISTS approval_carries (
        approval_sha256 TEXT PRIMARY KEY, carried_from TEXT NOT NULL, from_sha256 TEXT NOT NULL,
        tightened TEXT NOT NULL, carried_at TEXT NOT NULL)""",
]

ACTIONS = ("propose", "approve", "revoke")  # what act() does; status() only reads
_ROLES = {"propose": (MemberRole.AUTHOR, "propose {plural}"), "approve": (MemberRole.APPROVER, "approve {plural}"),
          "revoke": (MemberRole.APPROVER, "revoke approvals")}


@dataclass(frozen=True)
class Approval:
    """A row of the approvals table ("template" holds the subject's key: see Subject.key)."""

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
        rule = KINDS[Kind.RULE].store_prefix
        if self.template.startswith(rule):
            return f"rule {self.template[len(rule):]}"
        return f"template {self.template}"


@dataclass(frozen=True)
class ApprovalStatus:
    """Where the current version of a subject stands: who must approve it, who has."""

    subject: Subject
    approvals: tuple[Approval, ...]  # of the current hash (carried forward ones included)
    missing: tuple[str, ...]  # owners who have not approved the current hash
    proposed_by: str | None = None

    @property
    def kind(self) -> Kind:
        return self.subject.kind

    @property
    def name(self) -> str:
        return self.subject.name

    @property
    def sha256(self) -> str:
        return self.subject.sha256

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(sorted(self.subject.owners))

    @property
    def approved(self) -> bool:
        return not self.missing

    def as_json(self) -> dict:
        kind, carries = self.kind.value, self.subject.facts.carries_forward
        return {
            "cleanroom": self.subject.cleanroom, kind: self.name, f"{kind}_sha256": self.sha256,
            "owners": list(self.owners), "approved": self.approved, "missing": list(self.missing),
            "proposed_by": self.proposed_by,
            "approvals": [{**a.as_json(), "carried_from": a.carried_from} if carries else a.as_json()
                          for a in self.approvals],
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
        self._subjects: dict[tuple[str, str, str, str], Subject] = {}  # (policy version, room, kind, name)
        for statement in RULE_SCHEMA:
            self.store.execute(statement)

    @classmethod
    def from_config(cls, config: GatewayConfig, audit: AuditLog | None = None) -> "Collaboration":
        audit = audit or AuditLog.for_config(config)
        return cls(Store.from_config(config), audit, config.store.output_retention_hours)

    # -- subjects --------------------------------------------------------------------
    def subject(self, room: CleanRoom, kind: Kind | str, name: str) -> Subject:
        """The subject as the room's policy has it (cached: a policy version never changes)."""
        key = (room.version, room.name, Kind(kind).value, name)
        if key not in self._subjects:
            self._subjects[key] = subject_of(room, kind, name)
        return self._subjects[key]

    def subjects(self, room: CleanRoom) -> list[Subject]:
        """Every template, then every rule of the room."""
        return [self.subject(room, kind, name) for kind, name in subject_names(room)]

    def _approvals(self, subject: Subject) -> tuple[Approval, ...]:
        rows = self.store.query_unchanged(  # on every statement's path: kept while the store is unchanged
            "SELECT * FROM approvals WHERE cleanroom = ? AND template = ? AND template_sha256 = ? ORDER BY approved_at",
            (subject.cleanroom, subject.key, subject.sha256),
        )
        return tuple(Approval(**row) for row in rows if row["collaborator"] in subject.owners)

    # -- what the engine asks ----------------------------------------------------------
    def require_approved(self, room: CleanRoom, kind: Kind | str, name: str,
                         tables: frozenset[str] | None = None) -> tuple[Subject, tuple[Approval, ...]]:
        """The subject and the approvals of its current hash if every owner of `tables`
        (default: the tables the subject reads or covers) approved it; else Refused.
        On the path of every statement a template or rule authorises: one read."""
        subject = self.subject(room, kind, name)
        approvals = self._approvals(subject)
        needed = subject.owners if tables is None else subject_owners(room, tables, subject.form)
        missing = sorted(needed - {a.collaborator for a in approvals})
        if missing:
            raise Refused(
                f"{subject.label} is not approved by {', '.join(missing)} (current hash {subject.sha256[:12]})",
                rule=f"{subject.kind.value}.not_approved",
                hint=subject.facts.approve_hint.format(name=name, missing=", ".join(missing)),
            )
        return subject, approvals

    def status(self, room: CleanRoom, name: str, kind: Kind | str = Kind.TEMPLATE) -> ApprovalStatus:
        subject = self.subject(room, kind, name)
        approvals = self._approvals(subject)
        if subject.facts.carries_forward:
            approvals = self._with_carries(subject, approvals)
        approved = {a.collaborator for a in approvals}
        return ApprovalStatus(subject, approvals, tuple(sorted(subject.owners - approved)), self._proposer(subject))

    def _with_carries(self, subject: Subject, approvals: tuple[Approval, ...]) -> tuple[Approval, ...]:
        carries = {
            row["approval_sha256"]: row for row in self.store.query(
                "SELECT c.* FROM approval_carries c JOIN approvals a ON a.approval_sha256 = c.approval_sha256 "
                "WHERE a.cleanroom = ? AND a.template = ? AND a.template_sha256 = ?",
                (subject.cleanroom, subject.key, subject.sha256),
            )
        }
        return tuple(
            dataclasses.replace(a, carried_from={
                "approval_sha256": carries[a.approval_sha256]["carried_from"],
                "rule_sha256": carries[a.approval_sha256]["from_sha256"],
                "tightened": json.loads(carries[a.approval_sha256]["tightened"]),
            }) if a.approval_sha256 in carries else a
            for a in approvals
        )

    def _proposer(self, subject: Subject) -> str | None:
        """Who proposed this version of the subject, if anyone."""
        proposal = self.store.query(
            "SELECT author FROM proposals WHERE cleanroom = ? AND template = ? AND template_sha256 = ?",
            (subject.cleanroom, subject.key, subject.sha256),
        )
        return proposal[0]["author"] if proposal else None

    def previous_version(self, subject: Subject) -> dict | None:
        """The newest approved version other than the current one whose canonical form
        is on record: its form, hash, approval time and collaborator (the console's diff)."""
        rows = self.store.query(
            "SELECT f.form, a.template_sha256, a.approved_at, a.collaborator FROM approvals a JOIN canonical_forms f "
            "ON f.cleanroom = a.cleanroom AND f.subject = a.template AND f.sha256 = a.template_sha256 "
            "WHERE a.cleanroom = ? AND a.template = ? AND a.template_sha256 <> ? ORDER BY a.approved_at DESC",
            (subject.cleanroom, subject.key, subject.sha256))
        if not rows:
            return None
        row = rows[0]
        return {"form": json.loads(row["form"]), "sha256": row["template_sha256"], "approved_at": row["approved_at"],
                "collaborator": row["collaborator"]}

    # -- what collaborators do ---------------------------------------------------------
    def act(self, user: str, room: CleanRoom, kind: Kind | str, name: str, action: str,
            front_end: str = "cli") -> dict:
        """The one path of every front end (CLI, HTTP, console) for propose, approve and
        revoke: the subject's status afterwards as JSON, with the approval's hash
        (approve) or the number of approvals withdrawn (revoke)."""
        if action not in ACTIONS:
            raise BadParameter(f"action must be one of {', '.join(ACTIONS)}, not {action[:40]!r}",
                               rule="collab.bad_action")
        done = getattr(self, action)(user, room, name, front_end, kind=kind)
        shown = self.status(room, name, kind).as_json()
        if action == "approve":
            return {"approval_sha256": done.approval_sha256, **shown}
        return {"revoked": done, **shown} if action == "revoke" else shown

    def propose(self, user: str, room: CleanRoom, name: str, front_end: str = "cli",
                kind: Kind | str = Kind.TEMPLATE) -> ApprovalStatus:
        subject = self._allowed(user, room, kind, name, "propose", front_end)[0]
        self.store.execute(
            "INSERT INTO proposals (cleanroom, template, template_sha256, author, proposed_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, template, template_sha256) DO NOTHING",
            (room.name, subject.key, subject.sha256, user, _now()),
        )
        self._audit(user, room, subject, "proposed", front_end)
        return self.status(room, name, kind)

    def approve(self, user: str, room: CleanRoom, name: str, front_end: str = "cli",
                kind: Kind | str = Kind.TEMPLATE) -> Approval:
        subject, collaborator = self._allowed(user, room, kind, name, "approve", front_end)
        if collaborator not in subject.owners:
            refusal = Refused(
                f"{subject.label} {subject.facts.covers} no table of {collaborator}; "
                f"only {', '.join(sorted(subject.owners))} approve it",
                rule=f"{subject.kind.value}.not_an_owner",
            )
            self._audit_refusal(user, room, subject.kind, name, front_end, refusal)
            raise refusal
        approval = self.record_approval(room, kind, name, collaborator, user)
        self._audit(user, room, subject, "approved", front_end, approval_sha256=approval.approval_sha256)
        return approval

    def revoke(self, user: str, room: CleanRoom, name: str, front_end: str = "cli",
               kind: Kind | str = Kind.TEMPLATE) -> int:
        """Withdraw the user's collaborator's approvals of every version of the subject
        (carried forward ones included: nothing is left to carry)."""
        subject, collaborator = self._allowed(user, room, kind, name, "revoke", front_end)
        removed = self.store.execute(
            "DELETE FROM approvals WHERE cleanroom = ? AND template = ? AND collaborator = ?",
            (room.name, subject.key, collaborator),
        )
        self._audit(user, room, subject, "revoked", front_end, revoked=removed)
        return removed

    def record_approval(self, room: CleanRoom, kind: Kind | str, name: str, collaborator: str,
                        approver: str) -> Approval:
        """Store an approval of the subject's current version, without checking roles
        and without an audit record: approve() checks and audits, test fixtures and
        policy tests call this directly. Approving twice keeps the first approval."""
        subject = self.subject(room, kind, name)
        self._remember_form(subject)  # what a later version is diffed with
        fields = {
            "cleanroom": room.name, "template": subject.key, "template_sha256": subject.sha256,
            "collaborator": collaborator, "approver": approver, "approved_at": _now(),
        }
        approval = Approval(**fields, approval_sha256=_approval_hash(fields))
        self._insert_approval(approval)
        existing = self.store.query(
            "SELECT * FROM approvals WHERE cleanroom = ? AND template = ? AND template_sha256 = ? AND collaborator = ?",
            (room.name, subject.key, subject.sha256, collaborator),
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

    def _remember_form(self, subject: Subject) -> None:
        self.store.execute(
            "INSERT INTO canonical_forms (cleanroom, subject, sha256, form) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (cleanroom, subject, sha256) DO NOTHING",
            (subject.cleanroom, subject.key, subject.sha256,
             json.dumps(subject.form, sort_keys=True, separators=(",", ":"))),
        )

    # -- carrying approvals forward ------------------------------------------------------
    def carry_forward(self, room: CleanRoom) -> None:
        """At policy load (engine start, reload, a command's load): for every subject
        that carries forward (rules) an owner has not approved in its current version,
        continue that owner's approval of a looser version the current one only
        tightens. Never on the path of a statement, so EXPLAIN, a Describe or a query
        never writes approvals."""
        for subject in self.subjects(room):
            if subject.facts.carries_forward:
                missing = subject.owners - {a.collaborator for a in self._approvals(subject)}
                if missing:
                    self._carry_forward(room, subject, missing)

    def _carry_forward(self, room: CleanRoom, subject: Subject, missing: frozenset[str]) -> None:
        """For each owner in `missing`, continue its newest approval of a version the
        current one only tightens."""
        earlier = self.store.query(
            "SELECT a.*, f.form FROM approvals a JOIN canonical_forms f ON f.cleanroom = a.cleanroom "
            "AND f.subject = a.template AND f.sha256 = a.template_sha256 "
            "WHERE a.cleanroom = ? AND a.template = ? AND a.template_sha256 <> ? ORDER BY a.approved_at DESC",
            (room.name, subject.key, subject.sha256),
        )
        for collaborator in sorted(missing):
            for row in (r for r in earlier if r["collaborator"] == collaborator):
                before = json.loads(row["form"])
                if loosenings(before, subject.form):
                    continue
                self._remember_form(subject)
                fields = {
                    "cleanroom": room.name, "template": subject.key, "template_sha256": subject.sha256,
                    "collaborator": collaborator, "approver": row["approver"], "approved_at": _now(),
                }
                approval = Approval(**fields, approval_sha256=_approval_hash(
                    {**fields, "carried_from": row["approval_sha256"]}))
                tightened = tightenings(before, subject.form)
                if self._insert_approval(approval):  # another worker may have carried it first
                    self.store.execute(
                        "INSERT INTO approval_carries (approval_sha256, carried_from, from_sha256, tightened, "
                        "carried_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (approval_sha256) DO NOTHING",
                        (approval.approval_sha256, row["approval_sha256"], row["template_sha256"],
                         json.dumps(tightened), approval.approved_at),
                    )
                    self._audit(row["approver"], room, subject, "carried_forward", "engine",
                                collaborator=collaborator, approval_sha256=approval.approval_sha256,
                                carried_from=row["approval_sha256"], from_sha256=row["template_sha256"],
                                tightened=tightened)
                break

    # -- roles and audit records -------------------------------------------------------
    def _allowed(self, user: str, room: CleanRoom, kind: Kind | str, name: str, action: str,
                 front_end: str) -> tuple[Subject, str]:
        """The subject and the user's collaborator, if the user holds the role `action`
        needs; else Refused (and audited). An unknown subject is refused first."""
        role, text = _ROLES[action]
        if not room.has_role(user, role):  # before the name is looked up: no role, nothing to learn
            refusal = Refused(
                f"{user} may not {text.format(plural=KINDS[Kind(kind)].plural)} in clean room {room.name} "
                f"(needs the {role.value} role)",
                rule=f"collab.not_{role.value}",
                hint="roles are granted under members: in the policy",
            )
            self._audit_refusal(user, room, Kind(kind), name, front_end, refusal)
            raise refusal
        return self.subject(room, kind, name), room.members[user].collaborator

    def _record(self, user: str, room: CleanRoom, front_end: str, decision: str) -> dict:
        return {"time": _now(), "user": user, "collaborator": room.collaborator_of(user), "cleanroom": room.name,
                "policy_version": room.version, "front_end": front_end, "decision": decision}

    def _audit_refusal(self, user: str, room: CleanRoom, kind: Kind, name: str, front_end: str,
                       refusal: Refused) -> None:
        self.audit.append({**self._record(user, room, front_end, "refused"), "rule": refusal.rule,
                           KINDS[kind].audit_name: name, "message": refusal.message})

    def _audit(self, user: str, room: CleanRoom, subject: Subject, decision: str, front_end: str, **extra) -> None:
        kind = subject.kind.value
        self.audit.append({**self._record(user, room, front_end, decision), "rule": f"{kind}.{decision}",
                           subject.facts.audit_name: subject.name, f"{kind}_sha256": subject.sha256, **extra})
