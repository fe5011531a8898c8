"""Pass 5, execute: run the generated SQL in an executor process (executors.py)
before the statement's deadline, and never let the engine's own message reach
the client.

The deadline counts from when the statement reaches this pass, queueing for an
executor included; past it the executor is killed, so the client has its 57014
within the deadline and a fraction of a second. A failure leaves at the
statement's padded time (timing.py), like an answer.

A constant statement (rewrite.is_constant: no data, no function) runs once; its
result is kept by its SQL. Drivers and BI tools send `SELECT 1` to check their
connections all day, and DuckDB's fixed cost per statement is ten times the rest
of the gateway's for it."""

from __future__ import annotations

import time

import pyarrow as pa

from gateway.engine import timing
from gateway.engine.state import QueryState
from gateway.plan import scoring


def execute(state: QueryState) -> QueryState:
    if state.measurement is not None:  # a differentially private answer released before
        return state
    if not state.constant:
        clock = timing.start(state)
        try:
            result = _run(state, clock.deadline)
        except Exception:
            clock.wait()
            raise
        return state.evolve(result=result, clock=clock)
    result = state.context.constant_results.get(state.generated_sql)
    if result is None:
        result = _run(state, time.monotonic() + state.context.config.engine.query_timeout_seconds)
        state.context.constant_results.put(state.generated_sql, result)
    return state.evolve(result=result)


def _run(state: QueryState, deadline: float) -> pa.Table:
    admission = state.admission
    return state.context.executors.run(
        state.request.request_id,
        principal=state.request.user,
        sql=state.generated_sql,
        max_rows=state.context.config.engine.max_result_rows,
        deadline=deadline,
        on_engine_seconds=admission.used if admission is not None else None,
        models=scoring.models_in(state.generated_sql, state.cleanroom),
    )
