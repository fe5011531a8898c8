"""Pass catalog: statements that read only the PostgreSQL catalog (pg_catalog,
information_schema, version(), current_database(), ...) are answered here, from
the policy, and the pipeline stops (gateway.pgcatalog does the work).

Drivers and BI tools send such queries on connect and while browsing. They run
on a tiny in-memory DuckDB per analyst holding only what that analyst may see
of the clean room; the private data is never touched. Statements that mix
catalog relations and clean-room tables are left to the resolver, which refuses
them (source.system_catalog).

The catalog database of a room's policy version and analyst never changes, so an
answer is kept by its statement unless the statement calls a function whose value
changes from call to call (now(), random(), ...): BI tools send the same dozen
catalog queries on every connection and every browse.
"""

from __future__ import annotations

from sqlglot import expressions as exp

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
    key = (room.name, room.version, request.user, request.sql, repr(request.params))
    sql = context.catalogs.translation(
        key,
        lambda: pgcatalog.translate(state.tree.copy(), request.user, room.name, room.tables).sql(dialect="duckdb"))
    database = context.catalogs.database((room.name, room.version, request.user), lambda: pgcatalog.build(
        pgcatalog.CatalogView(room=room, analyst=state.analyst, user=request.user,
                              tables=visible_tables(room, state.analyst), column_types=context.column_types[room.name],
                              rooms=context.cleanrooms)))
    table = context.catalog_results.get(key)
    if table is None:
        table = pgcatalog.answer(database, sql, context.config.engine.query_timeout_seconds, context.watchdog,
                                 context.log)
        if table.num_rows <= KEPT_ROWS and deterministic(state.tree):
            context.catalog_results.put(key, table)
    release = Release(request_id=request.request_id, table=table, authorised_by="catalog", min_group_size=None)
    return state.evolve(release=release, canonical_sql=sql)


KEPT_ROWS = 10_000  # larger catalog answers are computed afresh rather than held in memory

# Functions whose value changes between calls of the same statement (PostgreSQL's volatile
# and stable-per-transaction ones a catalog query might call); catalog answers using them are not kept.
_CHANGING = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime, exp.Rand, exp.Uuid)
_CHANGING_NAMES = frozenset({
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "localtime",
    "localtimestamp", "current_localtimestamp", "get_current_time", "get_current_timestamp", "random", "setseed",
    "gen_random_uuid", "uuid", "uuidv4", "uuidv7", "nextval", "currval", "lastval", "pg_sleep", "age",
    "pg_postmaster_start_time", "pg_conf_load_time", "txid_current", "pg_current_xact_id", "inet_client_port",
    "pg_stat_get_activity", "epoch_ms"})


def deterministic(tree: exp.Expression) -> bool:
    """Whether the statement's answer is the same on every run over the same catalog."""
    for node in tree.walk():
        if isinstance(node, _CHANGING):
            return False
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if name.lower() in _CHANGING_NAMES:
                return False
    return True
