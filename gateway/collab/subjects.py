"""What owners approve: an approval subject, a template or an aggregation rule
of a clean room, with its canonical form, the hash of that form and the
collaborators who own it (who must approve it).

The two kinds differ only in the facts of KINDS (how the form is built, which
tables the subject covers, how messages and audit records name it, whether
approvals of a looser version carry forward to a tightened one). Every action
(propose, approve, revoke, status) and every check the engine makes takes a
Subject, so each is written once in gateway.collab.approvals, and the CLI, the
HTTP API and the console call the same path for both kinds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.collab.canonical import (
    canonical_form,
    form_hash,
    subject_owners,
    rule_canonical_form,
    rule_tables,
    tables_touched,
)
from gateway.errors import UnknownRule, UnknownTemplate
from gateway.policy.model import CleanRoom


class Kind(str, enum.Enum):
    TEMPLATE = "template"
    RULE = "rule"


@dataclass(frozen=True)
class KindFacts:
    plural: str  # "propose templates", "approve rules"
    audit_name: str  # the audit record's key for the subject's name
    covers: str  # "template t reads no table of c", "rule r covers no table of c"
    carries_forward: bool  # an edit that only tightens keeps the owners' approvals (canonical.loosenings)
    unknown: type[UnknownTemplate] | type[UnknownRule]
    approve_hint: str  # how to approve the missing owners; {name} and {missing} filled in
    store_prefix: str  # rules share the approvals and proposals tables with templates, as "rule:<name>"


KINDS = {
    Kind.TEMPLATE: KindFacts(
        "templates", "template", "reads", False, UnknownTemplate,
        "every owner of every table it reads must approve this exact version: cleanroom template approve {name}", ""),
    Kind.RULE: KindFacts(
        "rules", "aggregation_rule", "covers", True, UnknownRule,
        "an approver of {missing} must approve this version of the rule: cleanroom rule approve {name} "
        "(cleanroom rule status {name} shows what is missing)", "rule:"),
}


@dataclass(frozen=True)
class Subject:
    kind: Kind
    cleanroom: str
    name: str
    form: dict  # the canonical form (gateway.collab.canonical): what the owners approve
    sha256: str  # its hash: only approvals of it count
    tables: frozenset[str]  # the policy tables it reads (template) or covers (rule)
    owners: frozenset[str]  # the collaborators owning those tables: who must approve

    @property
    def facts(self) -> KindFacts:
        return KINDS[self.kind]

    @property
    def key(self) -> str:
        """The subject's name in the store's approvals, proposals and canonical_forms tables."""
        return self.facts.store_prefix + self.name

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.name}"


def subject_of(room: CleanRoom, kind: Kind | str, name: str) -> Subject:
    """The subject `kind` `name` of the room as the policy has it now; unknown names
    are refused with template.unknown or rule.unknown."""
    kind = Kind(kind)
    if kind is Kind.TEMPLATE:
        template = room.templates.get(name)
        if template is None:
            raise UnknownTemplate(f"no template named {name!r}", rule="template.unknown")
        form, tables = canonical_form(room, template), tables_touched(room, template)
    else:
        rule = room.rules.get(name)
        if rule is None:
            raise UnknownRule(f"no rule named {name!r}", rule="rule.unknown")
        form, tables = rule_canonical_form(room, rule), rule_tables(rule)
    return Subject(kind, room.name, name, form, form_hash(form), tables, subject_owners(room, tables, form))


def subject_names(room: CleanRoom) -> Iterator[tuple[Kind, str]]:
    """Every subject of the room: its templates, then its rules, each in policy order."""
    yield from ((Kind.TEMPLATE, name) for name in room.templates)
    yield from ((Kind.RULE, name) for name in room.rules)
