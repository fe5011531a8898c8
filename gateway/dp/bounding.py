"""Contribution bounding, run inside DuckDB: the SQL whose result gets noised.

The cheap way (see bench/dp_speed.py): aggregate per unit and group first, then
bound each unit's totals, then aggregate the units. A unit adds at most
max_rows_per_unit rows to a group's count, a sum scaled down to what that many
rows may add, up to max_rows_per_unit values to a quantile, and appears in at
most max_groups_per_unit groups, chosen by a keyed hash of unit and group (not
by random(), which a query could seed, and not by anything an analyst can steer).
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.dp.plan import Kind, NoisePlan, Quantity


def bounded_sql(plan: NoisePlan, rows: exp.Select, key: str) -> str:
    """`rows` is plan.rows after the engine's rewrites (sources, TRY_CAST)."""
    rows = rows.copy()
    with_ = rows.args.get("with_")
    rows.set("with_", None)
    ctes = [cte.sql(dialect="duckdb") for cte in with_.expressions] if with_ is not None else []
    privacy = plan.privacy
    groups = [_quote(g.column) for g in plan.groups]
    per_unit = [_quote("__unit"), *groups]
    measures = [_per_unit(q, privacy.max_rows_per_unit, key) for q in plan.quantities[1:]]
    ctes.append(f'"__rows" AS ({rows.sql(dialect="duckdb")})')
    source = '"__per_unit"'
    if groups:
        # Each unit keeps its max_groups_per_unit groups of lowest keyed hash, found with a
        # top-k aggregate instead of sorting every row. A tie at the k-th hash (two groups
        # of one unit with equal 64-bit hashes) drops the tied groups: fewer, never more.
        limit = privacy.max_groups_per_unit
        measures.insert(0, f'hash({", ".join(per_unit)}, {_string(key)}) AS "__h"')
        ctes.append(f'"__per_unit" AS (SELECT {", ".join(per_unit + measures)} '
                    f'FROM "__rows" GROUP BY {", ".join(per_unit)})')
        ctes.append(f'"__cutoff" AS (SELECT "__unit", min("__h", {limit + 1}) AS "__low" '
                    'FROM "__per_unit" GROUP BY "__unit")')
        ctes.append('"__kept" AS (SELECT p.* FROM "__per_unit" AS p JOIN "__cutoff" AS c ON p."__unit" = c."__unit" '
                    f'WHERE len(c."__low") <= {limit} OR p."__h" < c."__low"[{limit}] '
                    f'OR (p."__h" = c."__low"[{limit}] AND c."__low"[{limit + 1}] <> c."__low"[{limit}]))')
        source = '"__kept"'
    else:
        ctes.append(f'"__per_unit" AS (SELECT {", ".join(per_unit + measures)} FROM "__rows" GROUP BY "__unit")')
    totals = ['COUNT(*) AS "__units"']
    totals += [_total(q.kind, q.column, privacy.max_rows_per_unit) for q in plan.quantities[1:]]
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


def _on_grid(quantity: Quantity) -> str:
    column = _quote(quantity.column)
    empty = "[]::DOUBLE[]" if quantity.kind is Kind.QUANTILE else "0"
    return f"COALESCE(t.{column}, {empty}) AS {column}"


def _per_unit(quantity: Quantity, max_rows: int, key: str) -> str:
    kind, value, column = quantity.kind, quantity.value, quantity.column
    if kind is Kind.ROWS:
        counted = "*" if value is None else _quote(value)
        return f'COUNT({counted}) AS {_quote(column + "_n")}'
    if kind in (Kind.SUM, Kind.CENTERED_SUM):
        summed = _quote(value) if kind is Kind.SUM else f"({_quote(value)} - {quantity.midpoint!r})"
        return (f'SUM({summed}) AS {_quote(column + "_s")}, '
                f'COUNT({_quote(value)}) AS {_quote(column + "_n")}')
    # QUANTILE: up to max_rows values per unit, picked by the keyed hash
    ordered = f'list({_quote(value)} ORDER BY hash({_quote(value)}, "__unit", {_string(key)})) ' \
              f'FILTER (WHERE {_quote(value)} IS NOT NULL)'
    return f'list_slice({ordered}, 1, {max_rows}) AS {_quote(column + "_l")}'


def _total(kind: Kind, column: str, max_rows: int) -> str:
    if kind is Kind.ROWS:
        return f'COALESCE(SUM(LEAST(b.{_quote(column + "_n")}, {max_rows})), 0)::BIGINT AS {_quote(column)}'
    if kind in (Kind.SUM, Kind.CENTERED_SUM):
        # a unit with n > max_rows values adds its sum scaled by max_rows / n:
        # at most what max_rows values within the bounds could add
        scale = f'LEAST(1.0, {max_rows} / b.{_quote(column + "_n")})'
        return f'COALESCE(SUM(b.{_quote(column + "_s")} * {scale}), 0)::DOUBLE AS {_quote(column)}'
    return f'COALESCE(flatten(list(b.{_quote(column + "_l")})), [])::DOUBLE[] AS {_quote(column)}'


def _key_grid(plan: NoisePlan) -> str:
    """Every combination of the declared public values: empty groups are released too."""
    parts = []
    for g in plan.groups:
        values = ", ".join(f"({_literal(v)})" for v in g.values)
        parts.append(f"(VALUES {values}) AS {_quote('t' + g.column)}({_quote(g.column)})")
    grid = "SELECT * FROM " + " CROSS JOIN ".join(parts)
    return grid if plan.key_filter is None else f"{grid} WHERE {plan.key_filter}"


def _literal(value) -> str:
    return _string(value) if isinstance(value, str) else repr(value)


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name + '"'
