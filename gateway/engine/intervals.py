"""Pass interval_columns: with `SET cleanroom.intervals = on` (or the startup option
`-c cleanroom.intervals=on`), every released column that shows a noisy aggregate
as it is gets two more columns, `<name>_low` and `<name>_high`: its row's 95%
interval (noise only), as the protection JSON gives it. BI tools drop
NoticeResponses; columns are what they chart (error bars).

Only differentially private releases have intervals; a quantile's interval is over
ranks, not values, so it gets none. Both columns are post-processing of released
values: they cost nothing.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
from sqlglot import expressions as exp

from gateway.dp import noising
from gateway.engine.state import QueryState


def interval_columns(state: QueryState) -> QueryState:
    release, plan = state.release, state.noise_plan
    if not state.request.intervals or release is None or plan is None or state.outer is not None:
        return state
    columns = (release.protection or {}).get("columns", {})
    table = release.table
    for name, position in noising.interval_columns(plan):
        shown = table.column_names[position]
        per_row = columns.get(name, {}).get("intervals") or [[None, None]] * table.num_rows
        for suffix, index in (("_low", 0), ("_high", 1)):
            table = _put(table, shown + suffix, [pair[index] for pair in per_row], append=True)
    return state.evolve(release=dataclasses.replace(release, table=table))


def with_interval_fields(plan, schema: pa.Schema) -> pa.Schema:
    """The released schema plus the interval columns (a wire client describes first)."""
    for _, position in noising.interval_columns(plan):
        shown = schema.names[position]
        for suffix in ("_low", "_high"):
            if shown + suffix in schema.names:
                schema = schema.set(schema.names.index(shown + suffix), pa.field(shown + suffix, pa.float64()))
            else:
                schema = schema.append(pa.field(shown + suffix, pa.float64()))
    return schema


def with_placeholders(tree: exp.Expression) -> exp.Expression:
    """A query over one released aggregate (a BI tool's SQL dataset) may name the
    inner aggregate's interval columns: each aggregate projection `n` of the derived
    table gets `n_low` and `n_high`, NULL until its release fills them (fill_placeholders),
    before the outer query runs on the released rows (gateway/engine/over_released.py)."""
    source = tree.args.get("from_") if isinstance(tree, exp.Select) else None
    if source is None or not isinstance(source.this, exp.Subquery) or not isinstance(source.this.this, exp.Select):
        return tree
    inner = source.this.this
    names = {p.alias_or_name for p in inner.expressions}
    added = []
    for projection in inner.expressions:
        if isinstance(projection, exp.Alias) and isinstance(projection.unalias(), exp.AggFunc):
            for suffix in ("_low", "_high"):
                if projection.alias + suffix not in names:
                    added.append(exp.alias_(exp.cast(exp.null(), "DOUBLE"), projection.alias + suffix, quoted=True))
    if added:
        inner.set("expressions", [*inner.expressions, *added])
    return tree


def fill_placeholders(table: pa.Table, protection: dict | None) -> pa.Table:
    """The released rows with their interval placeholders filled from the release's
    own per-row intervals (quantiles and k-only releases have none: they stay NULL)."""
    for name, shown in ((protection or {}).get("columns") or {}).items():
        per_row = shown.get("intervals")
        if not per_row:
            continue
        for suffix, index in (("_low", 0), ("_high", 1)):
            table = _put(table, name + suffix, [None if pair is None else pair[index] for pair in per_row])
    return table


def _put(table: pa.Table, name: str, values: list, append: bool = False) -> pa.Table:
    """Fill the column `name` (a placeholder the statement named), or add it (append)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, pa.float64()),
                                pa.array(values, pa.float64()))
    return table.append_column(name, pa.array(values, pa.float64())) if append else table
