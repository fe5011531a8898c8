"""Pass public_range: `SELECT MIN(d), MAX(d) FROM t` for a dimension whose range or
values the policy declares is answered from the policy, never from the data.

A BI tool's time-range control asks for the extent of a date column this way
(Superset does before it draws a time filter); a filter's value list asks for the
ends of a declared list. The policy already publishes both (time buckets' `from`
and `to`, a dimension's `values`), so the answer reads no row, needs no MIN/MAX
permission and costs no privacy; anything else about the column is left to the
other passes.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from sqlglot import expressions as exp

from gateway.engine.state import QueryState
from gateway.engine.types import Release
from gateway.policy.model import Column, Role

_LAST_MOMENT = dt.time(23, 59, 59, 999999)


def public_range(state: QueryState) -> QueryState:
    tree = state.tree
    if state.template is not None or not isinstance(tree, exp.Select) or len(state.uses) != 1:
        return state
    if any(tree.args.get(k) for k in ("joins", "where", "group", "having", "qualify", "distinct", "with_", "limit",
                                      "offset")):
        return state
    use = state.uses[0]
    types = state.context.column_types[state.cleanroom.name].get(use.table.name, {})
    names, values, shown = [], [], []
    for projection in tree.expressions:
        node = projection.unalias()
        column = node.this if isinstance(node, (exp.Min, exp.Max)) else None
        if not isinstance(column, exp.Column) or column.table != use.alias:
            return state
        declared = use.table.columns.get(column.name)
        ends = _declared_ends(declared, types.get(column.name, ""))
        if ends is None:
            return state
        names.append(projection.alias_or_name)
        values.append(ends[0] if isinstance(node, exp.Min) else ends[1])
        shown.append(column.name)
    if not names:
        return state
    table = pa.table([pa.array([v]) for v in values], names=names)
    notice = (f"answered from the policy: the declared range of {', '.join(sorted(set(shown)))}, not from the data "
              "(no row was read and nothing was spent)")
    release = Release(request_id=state.request.request_id, table=table, authorised_by="policy", min_group_size=None,
                      notices=(notice,))
    return state.evolve(release=release)


def _declared_ends(column: Column | None, sql_type: str):
    """(lowest, highest) the policy declares for a dimension, or None."""
    if column is None or column.role is not Role.DIMENSION:
        return None
    if column.buckets is not None:
        if sql_type.upper().startswith("TIMESTAMP"):
            return (dt.datetime.combine(column.buckets.start, dt.time()),
                    dt.datetime.combine(column.buckets.end, _LAST_MOMENT))
        return column.buckets.start, column.buckets.end
    if column.values:
        kinds = {type(v) for v in column.values}
        if len(kinds) == 1 or kinds <= {int, float}:
            return min(column.values), max(column.values)
    return None

