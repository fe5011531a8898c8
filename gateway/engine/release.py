"""Pass release: the executed result becomes what may leave the gateway,
saying how it was protected.

With differential privacy the bounded result is noised here (or the noisy
measurement comes back from the release cache), stored for repeats, and only
then do the analyst's projections, HAVING, ORDER BY and LIMIT run on it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from gateway.dp import noising
from gateway.dp.policy import spent_json
from gateway.engine.rewrite import BOOKKEEPING_COLUMNS
from gateway.engine.state import QueryState
from gateway.engine.types import Release


def release(state: QueryState) -> QueryState:
    if state.noise_plan is not None:
        return _noisy(state)  # its own thresholds, on noisy counts
    authorisation = state.authorisation
    table, suppressed = without_bookkeeping(state, state.result)
    table = _finite(table)
    notices = []
    if authorisation.min_group_size is not None:
        notices.append(
            f"every row comes from at least {authorisation.min_group_size} distinct "
            f"{' / '.join(_units(state))} values of each private table; smaller groups were suppressed"
        )
    return state.evolve(release=_release(state, table, tuple(notices)), rows_suppressed=suppressed)


def without_bookkeeping(state: QueryState, table: pa.Table) -> tuple[pa.Table, int | None]:
    """The rows that passed the k test, without the rewrite's bookkeeping columns,
    and how many groups it suppressed (None where that was not counted)."""
    if not state.counts_suppressed:
        return table, None
    width = table.num_columns - BOOKKEEPING_COLUMNS
    kept, suppressed = table.column(width), table.column(width + 1)
    if table.num_rows:
        count = int(suppressed[0].as_py())  # SUM is a HUGEINT in DuckDB
    else:  # no group at all, unless a LIMIT or OFFSET cut the row that carried the count
        cut = state.tree.args.get("limit") or state.tree.args.get("offset")
        count = None if cut else 0
    table = table.filter(pc.fill_null(kept, False)).select(range(width))
    return table, count


def _noisy(state: QueryState) -> QueryState:
    plan, measurement = state.noise_plan, state.measurement
    if measurement is None:
        fresh = noising.measure(plan, state.result, " / ".join(_units(state)))
        stored = state.context.privacy.releases.put(state.measurement_key, fresh.table, fresh.protection)
        # a racing identical query may have stored its answer first: everyone gets the stored one
        measurement = noising.Measurement(stored.table, stored.protection)
    published = _published(state, plan, measurement)
    protection = {**published.protection, "spent": spent_json(state.charged)}
    return state.evolve(measurement=measurement,
                        release=_release(state, _finite(published.table), published.notices, protection))


def _published(state: QueryState, plan, measurement: noising.Measurement) -> noising.NoisyRelease:
    """A replayed release (a dashboard redrawing answers it already has) publishes the same
    stored measurement with the same post-processing again: the engine keeps the last few,
    keyed by what decides the output, so a replay costs a lookup instead of a DuckDB query."""
    if not measurement.reused or measurement.table.num_rows > _REPLAY_ROWS:
        return noising.publish(plan, measurement)
    key = (state.measurement_key, state.request.sql, plan.post_sql)
    published = state.context.replays.get(key)
    if published is None:
        published = noising.publish(plan, measurement)
        state.context.replays.put(key, published)
    return published


_REPLAY_ROWS = 10_000  # larger answers are published afresh rather than held in memory


def _release(state: QueryState, table: pa.Table, notices: tuple[str, ...], protection=None) -> Release:
    plan = state.noise_plan  # under DP, the k the groups cleared: none on public keys released whatever their size
    return Release(
        request_id=state.request.request_id,
        table=table,
        authorised_by=state.authorisation.authorised_by,
        min_group_size=state.authorisation.min_group_size if plan is None else plan.applied_min_group_size,
        notices=notices,
        protection=protection,
    )


def _units(state: QueryState) -> list[str]:
    room = state.cleanroom
    return sorted({room.tables[t].privacy_unit for t in state.tables_read if not room.tables[t].public})


def _finite(table: pa.Table) -> pa.Table:
    """Division by zero gives inf in DuckDB; a release is finite or NULL."""
    for index, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(index)
            finite = pc.is_finite(column)
            table = table.set_column(index, field, pc.if_else(finite, column, pa.scalar(None, field.type)))
    return table
