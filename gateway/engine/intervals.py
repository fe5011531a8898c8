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
        table = table.append_column(f"{shown}_low", pa.array([low for low, _ in per_row], pa.float64()))
        table = table.append_column(f"{shown}_high", pa.array([high for _, high in per_row], pa.float64()))
    return state.evolve(release=dataclasses.replace(release, table=table))


def with_interval_fields(plan, schema: pa.Schema) -> pa.Schema:
    """The released schema plus the interval columns (a wire client describes first)."""
    for _, position in noising.interval_columns(plan):
        shown = schema.names[position]
        schema = schema.append(pa.field(f"{shown}_low", pa.float64())).append(pa.field(f"{shown}_high", pa.float64()))
    return schema
