"""Queries over released aggregates: `SELECT COUNT(*) FROM (<aggregate>) AS rowcount_qry`
(Superset's row count), `SELECT x, SUM(n) FROM (<aggregate>) AS virtual_table GROUP BY x`
(a chart on a SQL dataset), `SELECT DISTINCT n FROM (<aggregate>) q`.

When the outer part of a statement reads nothing but one derived aggregate query, it
is post-processing of what that aggregate releases: the inner query is authorised,
charged, thresholded or noised and released exactly as if it had been sent alone,
and the outer query then runs on the released rows only (in a DuckDB of its own, in
memory, that can read nothing else), so it costs no privacy and can learn nothing an
analyst could not compute from the released rows themselves. Shapes the flatten pass
can merge into one aggregate (an outer filter, order or limit) never get here.

Two passes: `peel` (after flatten) splits the statement; `post_process` (after
release) runs the outer part on the release.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
from sqlglot import expressions as exp

from gateway.engine.authorise import check_allowed_nodes
from gateway.engine.flatten import is_aggregate
from gateway.engine.intervals import fill_placeholders
from gateway.engine.state import QueryState
from gateway.plan.units import outer_uses
from gateway.scratch import scratch

RELEASED_ROWS = "__released_rows"  # the table the outer query reads: the inner query's release


def peel(state: QueryState) -> QueryState:
    tree = state.tree
    if state.template is not None or state.outer is not None or not isinstance(tree, exp.Select):
        return state
    inner = _single_aggregate_source(tree, state)
    if inner is None:
        return state
    outer = tree.copy()
    source = outer.args["from_"].this
    alias = source.alias_or_name
    check_allowed_nodes(outer)  # functions over released values too: no getenv(), no current_setting()
    source.replace(exp.Table(this=exp.to_identifier(RELEASED_ROWS, quoted=True),
                             alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))))
    inner = inner.copy()
    return state.evolve(tree=inner, uses=outer_uses(inner, state.cleanroom), outer=outer,
                        canonical_sql=inner.sql(dialect="duckdb"))


def post_process(state: QueryState) -> QueryState:
    """The outer query over the released rows; the release keeps its notices and
    says that its values are computed from released rows."""
    release = state.release
    if state.outer is None or release is None:
        return state
    released = fill_placeholders(release.table, release.protection) if state.request.intervals else release.table
    table = run_outer(state.outer, released)
    said = state.outer.meta.get("notice") or (
        f"computed from the {release.table.num_rows} released row(s) of the inner query by the outer query: "
        "post-processing, no further privacy cost; the intervals and counts above describe the released rows, "
        "not these values")
    notices = (*release.notices, said)
    protection = release.protection
    if protection is not None:
        protection = {**protection, "post_processing": {"rows_in": release.table.num_rows,
                                                         "sql": state.outer.sql(dialect="postgres")}}
        protection["columns"] = {}  # the outer columns are computed, not any one release column as it is
    return state.evolve(release=dataclasses.replace(release, table=table, notices=notices, protection=protection))


def run_outer(outer: exp.Select, released: pa.Table) -> pa.Table:
    with scratch() as con:
        con.register(RELEASED_ROWS, released)
        return con.execute(outer.sql(dialect="duckdb")).to_arrow_table()


def outer_schema(outer: exp.Select, inner: pa.Schema) -> pa.Schema:
    """The columns the outer query returns (a wire client describes before it runs)."""
    return run_outer(outer, inner.empty_table()).schema


def _single_aggregate_source(tree: exp.Select, state: QueryState) -> exp.Select | None:
    """The inner aggregate query when `tree` reads exactly one derived table, which
    aggregates private tables, and nothing else; None otherwise (authorise decides)."""
    source = tree.args.get("from_")
    if source is None or not isinstance(source.this, exp.Subquery) or tree.args.get("joins"):
        return None
    if tree.args.get("with_") is not None:
        return None
    inner = source.this.this
    if not isinstance(inner, exp.Select) or not is_aggregate(inner):
        return None
    outer_parts = [v for k, v in tree.args.items() if k != "from_" and v is not None]
    for part in outer_parts:
        for node in (part if isinstance(part, list) else [part]):
            if isinstance(node, exp.Expression) and node.find(exp.Subquery, exp.Select, exp.Table) is not None:
                return None
    room = state.cleanroom
    return inner if any(not room.tables[t].public for t in state.tables_read) else None

