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
    groups = [g.column for g in plan.groups]
    per_unit = [_quote("__unit"), *map(_quote, groups)]
    measures = []
    for q in plan.quantities[1:]:
        measures.append(_per_unit(q, privacy.max_rows_per_unit, key))
    ctes.append(f'"__rows" AS ({rows.sql(dialect="duckdb")})')
    ctes.append(
        f'"__per_unit" AS (SELECT {", ".join(per_unit + measures)} FROM "__rows" GROUP BY {", ".join(per_unit)})'
    )
    source = '"__per_unit"'
    if groups:
        hashed = ", ".join([_quote("__unit"), *map(_quote, groups), _string(key)])
        ctes.append(
            '"__kept" AS (SELECT * FROM "__per_unit" '
            f'QUALIFY row_number() OVER (PARTITION BY "__unit" ORDER BY hash({hashed})) <= {privacy.max_groups_per_unit})'
        )
        source = '"__kept"'
    totals = ['COUNT(b."__unit") AS "__units"']
    totals += [_total(q.kind, q.column, privacy.max_rows_per_unit) for q in plan.quantities[1:]]
    if groups and plan.public_keys:
        ctes.append(f'"__keys" AS ({_key_grid(plan)})')
        on = " AND ".join(f'b.{_quote(g)} = k.{_quote(g)}' for g in groups)
        keys = ", ".join(f"k.{_quote(g)}" for g in groups)
        select = f'SELECT {keys}, {", ".join(totals)} FROM "__keys" AS k LEFT JOIN {source} AS b ON {on} GROUP BY {keys}'
    elif groups:
        keys = ", ".join(f"b.{_quote(g)}" for g in groups)
        select = f'SELECT {keys}, {", ".join(totals)} FROM {source} AS b GROUP BY {keys}'
    else:
        select = f'SELECT {", ".join(totals)} FROM {source} AS b'
    return f"WITH {', '.join(ctes)} {select}"


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
