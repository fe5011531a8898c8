"""Pass 5, execute: run the generated SQL on a cursor of its own, with a timeout,
and never let the engine's own message reach the client.

A constant statement (rewrite.is_constant: no data, no function) runs once; its
result is kept by its SQL. Drivers and BI tools send `SELECT 1` to check their
connections all day, and DuckDB's fixed cost per statement is ten times the rest
of the gateway's for it."""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from gateway.engine.state import QueryState
from gateway.errors import ExecutionFailed, QueryCancelled, QueryTimeout, ResultTooLarge

BATCH_ROWS = 65_536


def execute(state: QueryState) -> QueryState:
    if state.measurement is not None:  # a differentially private answer released before
        return state
    if not state.constant:
        return state.evolve(result=_run(state))
    result = state.context.constant_results.get(state.generated_sql)
    if result is None:
        result = _run(state)
        state.context.constant_results.put(state.generated_sql, result)
    return state.evolve(result=result)


def _run(state: QueryState) -> pa.Table:
    context, request_id = state.context, state.request.request_id
    settings = context.config.engine
    cursor = context.database.cursor()
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        cursor.interrupt()

    with context.lock:
        context.running[request_id] = cursor
    alarm = context.watchdog.arm(settings.query_timeout_seconds, on_timeout)
    try:
        reader = cursor.execute(state.generated_sql).to_arrow_reader(BATCH_ROWS)
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            if rows > settings.max_result_rows:
                raise ResultTooLarge(
                    f"the result has more than {settings.max_result_rows} rows",
                    rule="engine.max_result_rows",
                    hint="aggregate further or add a LIMIT",
                )
            batches.append(batch)
        result = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        if timed_out.is_set():
            raise QueryTimeout(
                f"the query ran longer than {settings.query_timeout_seconds:g} s and was stopped",
                rule="engine.timeout",
            ) from None
        raise QueryCancelled("the query was cancelled", rule="engine.cancelled") from None
    except duckdb.Error:
        context.log.exception("engine failure for request %s: %s", request_id, state.generated_sql)
        raise ExecutionFailed(request_id) from None
    finally:
        context.watchdog.disarm(alarm)
        with context.lock:
            context.running.pop(request_id, None)
        cursor.close()
    return result
