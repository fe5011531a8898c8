"""Contribution bounding, run inside DuckDB: the SQL whose result gets noised.
Each family (gateway.dp.families) gives its own per-unit and per-group SQL; this
module assembles them.

The cheap way (see bench/dp_speed.py): aggregate per unit and group first, then
bound each unit's totals, then aggregate the units. A unit adds at most
max_rows_per_unit rows to a group's count, a sum scaled down to what that many
rows may add, up to max_rows_per_unit values to a quantile, and appears in at
most max_groups_per_unit groups, chosen by a keyed hash of unit and group (not
by random(), which a query could seed, and not by anything an analyst can steer).

With max_contributions_per_unit (C) below max_rows_per_unit x groups, a unit
also adds at most C rows to the whole query: it keeps min(max_groups_per_unit,
C) groups, taken in the order of the same keyed hash (then group key, to break
a tie), and each gets what the unit may still add, greatest(0, least(r, C - the
rows its earlier groups kept)), its allowance `__k`. Counts keep least(rows,
__k), sums are scaled by least(1, __k / rows), quantiles keep __k values: at
most C rows in all, picked without looking at any value, so the choice cannot
favour large or small ones. The unit still counts once in each group it keeps
(COUNT(DISTINCT unit), thresholds), allowance or not: at most min(g, C) groups.
Without C, or when it cannot bind, the allowance is r and the SQL is what it was.
"""

from __future__ import annotations

import datetime

from sqlglot import expressions as exp

from gateway.dp.families import QUANTITIES, Contribution
from gateway.dp.plan import NoisePlan, Quantity


def bounded_sql(plan: NoisePlan, rows: exp.Select, key: str) -> str:
    """`rows` is plan.rows after the engine's rewrites (sources, TRY_CAST)."""
    rows = rows.copy()
    with_ = rows.args.get("with_")
    rows.set("with_", None)
    ctes = [cte.sql(dialect="duckdb") for cte in with_.expressions] if with_ is not None else []
    privacy = plan.privacy
    bounds = Contribution.of(plan)
    groups = [_quote(g.column) for g in plan.groups]
    per_unit = [_quote("__unit"), *groups]
    rows_cap = privacy.max_rows_per_unit
    measures = [QUANTITIES[q.kind].per_unit(q, rows_cap, key) for q in plan.quantities[1:]]
    ctes.append(f'"__rows" AS ({rows.sql(dialect="duckdb")})')
    source = '"__per_unit"'
    allowance = str(min(rows_cap, bounds.rows_in_all))  # without GROUP BY: min(r, C)
    if groups and bounds.binds:
        measures.insert(0, 'COUNT(*) AS "__n"')  # all the unit's rows in the group: what its allowance is spent on
    if groups:
        # Each unit keeps its max_groups_per_unit groups of lowest keyed hash, found with a
        # top-k aggregate instead of sorting every row. A tie at the k-th hash (two groups
        # of one unit with equal 64-bit hashes) drops the tied groups: fewer, never more.
        limit = bounds.groups  # min(max_groups_per_unit, C): the unit count's sensitivity
        measures.insert(0, f'hash({", ".join(per_unit)}, {_string(key)}) AS "__h"')
        ctes.append(f'"__per_unit" AS (SELECT {", ".join(per_unit + measures)} '
                    f'FROM "__rows" GROUP BY {", ".join(per_unit)})')
        ctes.append(f'"__cutoff" AS (SELECT "__unit", min("__h", {limit + 1}) AS "__low" '
                    'FROM "__per_unit" GROUP BY "__unit")')
        ctes.append('"__kept" AS (SELECT p.* FROM "__per_unit" AS p JOIN "__cutoff" AS c ON p."__unit" = c."__unit" '
                    f'WHERE len(c."__low") <= {limit} OR p."__h" < c."__low"[{limit}] '
                    f'OR (p."__h" = c."__low"[{limit}] AND c."__low"[{limit + 1}] <> c."__low"[{limit}]))')
        source = '"__kept"'
        if bounds.binds:
            source, allowance = _total_cap(ctes, groups, rows_cap, bounds.total_per_unit)
    else:
        ctes.append(f'"__per_unit" AS (SELECT {", ".join(per_unit + measures)} FROM "__rows" GROUP BY "__unit")')
    totals = [QUANTITIES[q.kind].total(q, allowance) for q in plan.quantities]
    keys = ", ".join(groups)
    grouped = f"SELECT {keys + ', ' if groups else ''}{', '.join(totals)} FROM {source} AS b"
    if not groups:
        return f"WITH {', '.join(ctes)} {grouped}"
    if not plan.public_keys:
        return f"WITH {', '.join(ctes)} {grouped} GROUP BY {keys}"
    # Aggregate first, then put the totals on the grid of public keys: empty keys get zeros.
    ctes.append(f'"__totals" AS ({grouped} GROUP BY {keys})')
    ctes.append(f'"__keys" AS ({_key_grid(plan)})')
    on = " AND ".join(f"t.{g} = k.{g}" for g in groups)
    columns = [f"k.{g}" for g in groups] + [_on_grid(q) for q in plan.quantities]
    return f'WITH {", ".join(ctes)} SELECT {", ".join(columns)} FROM "__keys" AS k LEFT JOIN "__totals" AS t ON {on}'


def _total_cap(ctes: list[str], groups: list[str], rows_cap: int, total: int) -> tuple[str, str]:
    """At most `total` rows per unit over the whole query: each kept group, in keyed-hash
    order, is allowed greatest(0, least(r, total - what the unit's earlier groups kept)).
    What an earlier group keeps is least(its rows, r, its allowance): until the running
    sum of least(rows, r) passes `total` that is least(rows, r), then the one group that
    passes it gets the rest and every later one 0, so the rows kept add up to at most
    `total`. Returns the CTE to aggregate and the allowance column."""
    order = ", ".join(['"__h"', *groups])
    before = (f'SUM(LEAST("__n", {rows_cap})) OVER (PARTITION BY "__unit" ORDER BY {order} '
              'ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)')
    ctes.append(f'"__capped" AS (SELECT *, GREATEST(0, LEAST({rows_cap}, {total} - COALESCE({before}, 0))) '
                'AS "__k" FROM "__kept")')
    return '"__capped"', 'b."__k"'


def _on_grid(quantity: Quantity) -> str:
    column = _quote(quantity.column)
    return f"COALESCE(t.{column}, {QUANTITIES[quantity.kind].empty(quantity)}) AS {column}"


def _key_grid(plan: NoisePlan) -> str:
    """Every combination of the declared public values: empty groups are released too."""
    parts = []
    for g in plan.groups:
        values = ", ".join(f"({_literal(v)})" for v in g.values)
        parts.append(f"(VALUES {values}) AS {_quote('t' + g.column)}({_quote(g.column)})")
    grid = "SELECT * FROM " + " CROSS JOIN ".join(parts)
    return grid if plan.key_filter is None else f"{grid} WHERE {plan.key_filter}"


def _literal(value) -> str:
    if isinstance(value, datetime.datetime):  # public time buckets (gateway.dp.time_buckets)
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    return _string(value) if isinstance(value, str) else repr(value)


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name + '"'
