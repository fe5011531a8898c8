"""The identity an approval is bound to: a hash of the canonical template.

Canonical means: the SQL parsed (Postgres dialect) and generated again without
comments, with identifiers normalised, so layout and comments do not matter but
any change to what runs does; plus the parameter declarations (types, allowed
values, bounds, defaults), the release settings (the template's own k and the
k actually enforced) and the output declaration (who receives the result).
Any change to one of them gives a new hash, and approvals of the old one no
longer count.
"""

from __future__ import annotations

import hashlib
import json

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from gateway.policy.model import CleanRoom, Template


def canonical_sql(sql: str) -> str:
    tree = normalize_identifiers(sqlglot.parse_one(sql, read="postgres"), dialect="postgres")
    return tree.sql(dialect="postgres", comments=False)


def tables_touched(room: CleanRoom, template: Template) -> frozenset[str]:
    """Policy tables the template names (CTE names shadow tables, so they are left out)."""
    tree = normalize_identifiers(sqlglot.parse_one(template.sql, read="postgres"), dialect="postgres")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return frozenset(t.name for t in tree.find_all(exp.Table) if t.name in room.tables and t.name not in ctes)


def owners(room: CleanRoom, tables: frozenset[str]) -> frozenset[str]:
    """Collaborators whose approval a template reading `tables` needs."""
    return frozenset(room.tables[t].owner for t in tables)


def canonical_form(room: CleanRoom, template: Template) -> dict:
    from gateway.engine.authorise import group_size  # late: the engine imports this package

    parameters = [
        {
            "name": p.name, "type": p.type.value, "values": list(p.values) if p.values is not None else None,
            "minimum": p.minimum, "maximum": p.maximum, "pattern": p.pattern, "default": p.default,
        }
        for p in sorted(template.parameters, key=lambda p: p.name)
    ]
    tables = tables_touched(room, template)
    output = template.output
    return {
        "cleanroom": room.name,
        "template": template.name,
        "sql": canonical_sql(template.sql),
        "parameters": parameters,
        "release": {
            "min_group_size": template.min_group_size,
            "enforced_min_group_size": group_size(room, tables, template.min_group_size),
        },
        "output": {"name": output.name, "receivers": sorted(output.receivers)} if output else None,
    }


def template_hash(room: CleanRoom, template: Template) -> str:
    body = json.dumps(canonical_form(room, template), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()
