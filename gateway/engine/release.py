"""Pass 6, release: the executed result becomes what may leave the gateway,
saying how it was protected."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from gateway.engine.state import QueryState
from gateway.engine.types import Release


def release(state: QueryState) -> QueryState:
    authorisation = state.authorisation
    table = _finite(state.result)
    notices = []
    if authorisation.min_group_size is not None:
        units = sorted({state.cleanroom.tables[t].privacy_unit for t in state.tables_read if not state.cleanroom.tables[t].public})
        notices.append(
            f"every row comes from at least {authorisation.min_group_size} distinct "
            f"{' / '.join(units)} values of each private table; smaller groups were suppressed"
        )
    return state.evolve(
        release=Release(
            request_id=state.request.request_id,
            table=table,
            authorised_by=authorisation.authorised_by,
            min_group_size=authorisation.min_group_size,
            notices=tuple(notices),
        )
    )


def _finite(table: pa.Table) -> pa.Table:
    """Division by zero gives inf in DuckDB; a release is finite or NULL."""
    for index, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(index)
            finite = pc.is_finite(column)
            table = table.set_column(index, field, pc.if_else(finite, column, pa.scalar(None, field.type)))
    return table
