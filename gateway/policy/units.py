"""Where a private table's privacy unit reaches the outer query of a statement:
which columns of the outermost SELECT carry each unit, and whether an outer join
can leave it out of a row.

The policy's own static template check needs this as much as the engine's k
rewrite and DP bounding (gateway.plan.units), so it lives with the policy.
"""

from __future__ import annotations

from sqlglot import expressions as exp
from sqlglot.optimizer.scope import Scope as SqlScope
from sqlglot.optimizer.scope import build_scope

from gateway.errors import Refused
from gateway.policy.model import CleanRoom


def optional_aliases(select: exp.Select) -> set[str]:
    """Aliases of the outermost FROM that an outer join may leave out of a row:
    the right side of a LEFT join, both sides of a FULL join, and everything
    before a RIGHT or FULL join."""
    entries = [(select.args["from_"].this, "")] if select.args.get("from_") else []
    entries += [(j.this, (j.side or "").upper()) for j in select.args.get("joins") or []]
    optional = set()
    for i, (node, side) in enumerate(entries):
        later = {s for _, s in entries[i + 1 :]}
        if side in ("LEFT", "FULL") or later & {"RIGHT", "FULL"}:
            optional.add(node.alias_or_name)
    return optional


def unit_columns(tree: exp.Expression, room: CleanRoom, tables_read: frozenset[str]) -> list[tuple[exp.Column, bool]]:
    """For each private table read, a column of the outermost SELECT that carries
    its privacy unit, and whether an outer join makes that column optional.

    A unit reaches the outer query directly (alias.unit) or through CTEs and
    derived tables that project it unchanged. A private table whose unit cannot
    be followed cannot be threshold-checked, so the query is refused.
    """
    if not isinstance(tree, exp.Select):
        raise Refused("the outermost query must be a SELECT to be threshold-checked", rule="query.set_operation")
    scope = build_scope(tree)
    nullable = optional_aliases(tree)
    found: dict[str, tuple[exp.Column, bool]] = {}
    for alias, (_, source) in scope.selected_sources.items():
        for output, table_name in unit_outputs(source, room):
            candidate = (exp.column(output, table=alias, quoted=True), alias in nullable)
            if table_name not in found or (found[table_name][1] and not candidate[1]):
                found[table_name] = candidate
    private = sorted(t for t in tables_read if not room.tables[t].public)
    missing = [t for t in private if t not in found]
    if missing:
        raise Refused(
            f"the privacy unit of {', '.join(missing)} does not reach the outer query, "
            "so its group sizes cannot be checked",
            rule="query.untraceable_unit",
            hint="project the unit column through every CTE and derived table",
        )
    return [found[t] for t in private]


def unit_outputs(source: exp.Table | SqlScope, room: CleanRoom):
    """(output column name, private table) pairs for the unit columns a source exposes."""
    if isinstance(source, exp.Table):
        table = room.tables.get(source.name)
        if table is not None and not table.public:
            yield table.privacy_unit, table.name
        return
    select = source.expression
    if not isinstance(select, exp.Select):
        return
    for projection in select.expressions:
        inner = projection.unalias()
        if isinstance(inner, exp.Column) and inner.table in source.selected_sources:
            for name, table_name in unit_outputs(source.selected_sources[inner.table][1], room):
                if name == inner.name:
                    yield projection.alias_or_name, table_name
