"""Pass flatten: the derived tables BI tools wrap around a query are merged into it.

Power BI folds a visual into `SELECT … FROM (SELECT … FROM (SELECT cols FROM t) rows
GROUP BY …) _ WHERE … LIMIT 1000001`; other tools nest similarly. Ad-hoc queries
over private tables may not contain subqueries (authorise: query.subquery), so
this pass rewrites such a statement into the one flat SELECT it means, before
anything is authorised. What is authorised, rewritten and run is the flat query:

- a derived table (or CTE) that only projects or filters is merged into the
  query that reads it (sqlglot's merge_subqueries);
- an outer query that only projects, filters, orders and limits the rows of one
  aggregate query becomes part of it: its filter joins the HAVING, its order and
  limit replace the inner ones (which must have none).

- `SELECT DISTINCT cols` (no aggregate) is `SELECT cols ... GROUP BY cols`.

Anything else is left as written, and authorise decides. Templates are left as
approved.
"""

from __future__ import annotations

from sqlglot import expressions as exp
from sqlglot.optimizer.merge_subqueries import merge_subqueries

from gateway.engine.state import QueryState
from gateway.plan.units import outer_uses


def flatten(state: QueryState) -> QueryState:
    tree = state.tree
    if state.template is not None or not isinstance(tree, exp.Select):
        return state
    flat = tree
    if tree.find(exp.Subquery, exp.CTE) is not None:
        flat = merge_subqueries(_inline_ctes(tree.copy()), leave_tables_isolated=False)
        while isinstance(flat, exp.Select) and (lifted := _lift_outer(flat)) is not None:
            flat = lifted
    if isinstance(flat, exp.Select):
        flat = _distinct_as_group_by(flat)
    if flat == tree:
        return state
    return state.evolve(tree=flat, uses=outer_uses(flat, state.cleanroom), canonical_sql=flat.sql(dialect="duckdb"))


def _distinct_as_group_by(select: exp.Select) -> exp.Select:
    """`SELECT DISTINCT a, b FROM t` is `SELECT a, b FROM t GROUP BY a, b` (BI tools ask
    for filter values this way): the same thresholds and noise then apply to it as to
    the grouped query. DISTINCT over aggregates is left alone: it runs on released rows."""
    distinct = select.args.get("distinct")
    if distinct is None or distinct.args.get("on") or select.args.get("group") is not None:
        return select
    if any(p.find(exp.AggFunc, exp.Window, exp.Star) is not None for p in select.expressions):
        return select
    grouped = select.copy()
    grouped.set("distinct", None)
    grouped.set("group", exp.Group(expressions=[p.unalias().copy() for p in select.expressions]))
    return grouped


def _inline_ctes(select: exp.Select) -> exp.Select:
    """`WITH q AS (...) SELECT ... FROM q` as `SELECT ... FROM (...) AS q` when the outer
    query reads q once and nothing else reads it, so the lifting below applies to it."""
    with_ = select.args.get("with_")
    source = select.args.get("from_")
    if with_ is None or source is None or not isinstance(source.this, exp.Table) or source.this.db:
        return select
    name = source.this.name
    readers = [t for t in select.find_all(exp.Table) if not t.db and t.name == name]
    ctes = [cte for cte in with_.expressions if cte.alias_or_name == name]
    if len(readers) != 1 or len(ctes) != 1:
        return select
    derived = exp.Subquery(this=ctes[0].this.copy(), alias=exp.TableAlias(
        this=exp.to_identifier(source.this.alias_or_name, quoted=True)))
    source.this.replace(derived)
    remaining = [cte for cte in with_.expressions if cte is not ctes[0]]
    select.set("with_", exp.With(expressions=remaining) if remaining else None)
    return select


def _lift_outer(outer: exp.Select) -> exp.Select | None:
    """`SELECT cols FROM (aggregate query) a [WHERE p] [ORDER BY o] [LIMIT n]` as one
    aggregate query, or None when the outer query does anything else."""
    source = outer.args.get("from_")
    inner = source.this.this if source is not None and isinstance(source.this, exp.Subquery) else None
    if not isinstance(inner, exp.Select) or not is_aggregate(inner):
        return None
    if any(outer.args.get(k) for k in ("joins", "group", "having", "distinct", "qualify", "with_", "windows")):
        return None
    if any(inner.args.get(k) for k in ("limit", "offset", "distinct", "with_")):
        return None
    own = [*outer.expressions, *(outer.args[k] for k in ("where", "order") if outer.args.get(k))]
    if any(part.find(exp.AggFunc, exp.Window, exp.Subquery) is not None for part in own):
        return None
    alias = source.this.alias_or_name
    outputs = {projection.alias_or_name: projection for projection in inner.expressions}
    if len(outputs) != len(inner.expressions):
        return None  # two inner columns of one name: the outer reference is ambiguous

    def inlined(node: exp.Expression) -> exp.Expression | None:
        """The outer expression over the inner query's expressions; None if it reads anything else."""
        node = node.copy()
        for column in list(node.find_all(exp.Column)):  # found before any is replaced
            found = outputs.get(column.name) if column.table in ("", alias) else None
            if found is None:
                return None
            replacement = found.unalias().copy()
            if column is node:
                return replacement
            column.replace(replacement)
        return node

    lifted = inner.copy()
    projections = []
    for projection in outer.expressions:
        if isinstance(projection, exp.Star):
            projections.extend(p.copy() for p in inner.expressions)
            continue
        expression = inlined(projection.unalias())
        if expression is None:
            return None
        projections.append(exp.alias_(expression, projection.alias_or_name, quoted=True))
    lifted.set("expressions", projections)
    where = outer.args.get("where")
    if where is not None:
        condition = inlined(where.this)
        if condition is None:
            return None
        having = lifted.args.get("having")
        lifted.set("having", exp.Having(this=exp.and_(having.this, condition) if having else condition))
    lifted.set("order", None)  # an inner order without a limit means nothing to the outer query
    order = outer.args.get("order")
    if order is not None:
        keys = []
        for key in order.expressions:
            by = inlined(key.this)
            if by is None:
                return None
            keys.append(key.copy())
            keys[-1].set("this", by)
        lifted.set("order", exp.Order(expressions=keys))
    for part in ("limit", "offset"):
        if outer.args.get(part) is not None:
            lifted.set(part, outer.args[part].copy())
    return lifted


def is_aggregate(select: exp.Select) -> bool:
    """Whether a SELECT aggregates (a GROUP BY, or an aggregate in its projections)."""
    return bool(select.args.get("group")) or any(p.find(exp.AggFunc) for p in select.expressions)
