"""Pass verify: the generated SQL, parsed again, reads only the attached sources
of the tables the statement was resolved to read, and its own CTEs
(gateway.plan.verify). A second line of defence behind resolve: it holds even
if a later rewrite were wrong. With the Spark engine, the statement's Spark form
is made here too, so one Spark cannot compute is refused before it is charged."""

from __future__ import annotations

from gateway import sources
from gateway.engine.state import QueryState
from gateway.plan import scoring
from gateway.plan.verify import check_generated


def verify(state: QueryState) -> QueryState:
    if state.generated_sql is None:
        return state
    relations = set()
    for name in state.tables_read:
        relation = sources.relation_for(state.cleanroom.tables[name])
        relations.add((relation.catalog, relation.db, relation.name))
    try:
        check_generated(state.generated_sql, relations, scoring.functions(state.cleanroom))
    except Exception:
        state.context.log.error("generated SQL refused by verify for request %s: %s",
                                state.request.request_id, state.generated_sql)
        raise
    if state.context.config.engine.kind == "spark":  # refused here, not after charge (execute converts again, cached)
        from gateway.spark.sql import to_spark

        to_spark(state.generated_sql)
    return state
