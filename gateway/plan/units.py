"""Privacy units and roles in a resolved statement: which policy tables the
outer query reads (and whether an outer join may leave them out of a row),
which of its columns carry each private table's unit (gateway.policy.units,
which the policy's template check shares), and how a measure is clamped to its
declared bounds. The k rewrite and DP bounding both read these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import expressions as exp

from gateway.policy.model import CleanRoom, Table
from gateway.policy.units import optional_aliases, unit_columns, unit_outputs

__all__ = ["TableUse", "clamp", "cte_names", "optional_aliases", "outer_uses", "unit_columns", "unit_outputs"]


@dataclass(frozen=True)
class TableUse:
    """One policy table read by the statement, under the alias the tree now uses."""

    alias: str
    table: Table
    nullable: bool = False  # on the optional side of an outer join


def cte_names(tree: exp.Expression) -> set[str]:
    """The resolver names CTEs so that none shadows a policy table."""
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


def outer_uses(tree: exp.Expression, cleanroom: CleanRoom) -> tuple[TableUse, ...]:
    """Policy tables in the outermost FROM, and whether an outer join may leave them out."""
    if not isinstance(tree, exp.Select) or tree.args.get("from_") is None:
        return ()
    ctes = cte_names(tree)
    optional = optional_aliases(tree)
    sources = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
    return tuple(
        TableUse(alias=node.alias_or_name, table=cleanroom.tables[node.name], nullable=node.alias_or_name in optional)
        for node in sources
        if isinstance(node, exp.Table) and node.name in cleanroom.tables and (node.db or node.name not in ctes)
    )


def clamp(value: exp.Expression, lower: float, upper: float) -> exp.Expression:
    """value forced into [lower, upper]; NULL stays NULL (DuckDB's GREATEST and
    LEAST skip NULLs, so GREATEST(NULL, 0) would turn a missing value into 0)."""
    low, high = exp.Literal.number(lower), exp.Literal.number(upper)
    at_least = exp.Greatest(this=value.copy(), expressions=[low], ignore_nulls=True)
    bounded = exp.Least(this=at_least, expressions=[high], ignore_nulls=True)
    return exp.Case(ifs=[exp.If(this=exp.Is(this=value, expression=exp.null()), true=exp.null())], default=bounded)
