"""Pass catalog: statements that read only the PostgreSQL catalog (pg_catalog,
information_schema, version(), current_database(), ...) are answered here, from
the policy, and the pipeline stops (gateway.pgcatalog does the work).

Drivers and BI tools send such queries on connect and while browsing. They run
on a tiny in-memory DuckDB per analyst holding only what that analyst may see
of the clean room; the private data is never touched. Statements that mix
catalog relations and clean-room tables are left to the resolver, which refuses
them (source.system_catalog).
"""

from __future__ import annotations

from gateway import pgcatalog
from gateway.engine.resolve import visible_tables
from gateway.engine.state import QueryState
from gateway.engine.types import Release


def catalog(state: QueryState) -> QueryState:
    if state.release is not None or state.template is not None or state.tree is None:
        return state
    room, request, context = state.cleanroom, state.request, state.context
    if not pgcatalog.reads_only_catalog(state.tree, room.tables):
        return state
    sql = context.catalogs.translation(
        (room.name, room.version, request.user, request.sql, repr(request.params)),
        lambda: pgcatalog.translate(state.tree.copy(), request.user, room.name, room.tables).sql(dialect="duckdb"))
    database = context.catalogs.database((room.name, room.version, request.user), lambda: pgcatalog.build(
        pgcatalog.CatalogView(room=room, analyst=state.analyst, user=request.user,
                              tables=visible_tables(room, state.analyst), column_types=context.column_types[room.name],
                              rooms=context.cleanrooms)))
    table = pgcatalog.answer(database, sql, context.config.engine.query_timeout_seconds, context.watchdog, context.log)
    release = Release(request_id=request.request_id, table=table, authorised_by="catalog", min_group_size=None)
    return state.evolve(release=release, canonical_sql=sql)
