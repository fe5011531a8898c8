"""Pass series_limit: a BI tool's "series limit" (Superset's, Tableau's top n) as
post-processing of one release.

    SELECT month, region, COUNT(*) AS n FROM purchases
    JOIN (SELECT region AS region__, COUNT(*) AS m FROM purchases WHERE <same filter>
          GROUP BY region ORDER BY m DESC LIMIT 3) AS series_limit ON region = region__
    WHERE <same filter> GROUP BY month, region

asks for the outer aggregate restricted to the 3 regions with the most rows. When the
inner query reads the same rows as the outer one (same FROM, same WHERE), groups by the
join keys and ranks them by an aggregate the outer query also releases, that ranking
can be read off the outer release: the outer aggregate is released alone (charged as
any query), and its released rows are then kept to the top n keys by their released
totals (summed over the outer's other group keys, so only COUNT and SUM rank there).
Nothing else is released and nothing more is charged. Any other shape is left as
written, and authorise refuses it (query.subquery).
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.engine.over_released import RELEASED_ROWS
from gateway.engine.state import QueryState
from gateway.plan.units import outer_uses

NOTICE = ("series limit: the released rows were kept to the {n} value(s) of {keys} with the {direction} released "
          "{metric}, ranked after the noise; no other number was released or charged")


def series_limit(state: QueryState) -> QueryState:
    tree = state.tree
    if state.template is not None or state.outer is not None or not isinstance(tree, exp.Select):
        return state
    found = _shape(tree)
    if found is None:
        return state
    keys, metric, n, descending = found
    released = tree.copy()
    for part in ("joins", "order", "limit", "offset"):
        released.set(part, None)
    post = _post(tree, keys, metric, n, descending)
    if post is None:
        return state
    post.meta["notice"] = NOTICE.format(n=n, keys=" / ".join(keys), metric=metric,
                                        direction="highest" if descending else "lowest")
    return state.evolve(tree=released, uses=outer_uses(released, state.cleanroom), outer=post,
                        canonical_sql=released.sql(dialect="duckdb"))


def _shape(tree: exp.Select):
    """(outer key output names, metric output name, n, descending), or None."""
    joins = tree.args.get("joins") or []
    if len(joins) != 1 or tree.args.get("having") is not None or tree.args.get("distinct") is not None:
        return None
    join = joins[0]
    if join.args.get("side") or (join.args.get("kind") or "").upper() not in ("", "INNER"):
        return None
    if not isinstance(join.this, exp.Subquery) or not isinstance(join.this.this, exp.Select):
        return None
    inner, alias = join.this.this, join.this.alias_or_name
    limit, order = inner.args.get("limit"), inner.args.get("order")
    if limit is None or order is None or len(order.expressions) != 1:
        return None
    if any(inner.args.get(k) is not None for k in ("offset", "having", "distinct", "with_", "qualify")):
        return None
    if inner.args.get("joins") or not inner.args.get("group"):
        return None
    if _bare(inner.args.get("from_")) != _bare(tree.args.get("from_")) or \
            _bare(inner.args.get("where")) != _bare(tree.args.get("where")):
        return None  # ranked on other rows than the outer's: not readable off its release
    count = limit.expression
    if not (isinstance(count, exp.Literal) and not count.is_string and str(count.this).isdigit()):
        return None
    inner_outputs = {p.alias_or_name: p.unalias() for p in inner.expressions}
    outer_names = {_bare(p.unalias()): p.alias_or_name for p in tree.expressions}
    keys = []
    for condition in _conjuncts(join.args.get("on")):
        if not isinstance(condition, exp.EQ):
            return None
        sides = [condition.this, condition.expression]
        inner_side = [s for s in sides if isinstance(s, exp.Column) and s.table == alias]
        outer_side = [s for s in sides if not (isinstance(s, exp.Column) and s.table == alias)]
        if len(inner_side) != 1 or len(outer_side) != 1:
            return None
        grouped = inner_outputs.get(inner_side[0].name)
        if grouped is None or _bare(grouped) != _bare(outer_side[0]):
            return None
        if _bare(grouped) not in {_bare(g) for g in inner.args["group"].expressions}:
            return None
        name = outer_names.get(_bare(outer_side[0]))
        if name is None:
            return None  # the key must be a released column to rank by it
        keys.append(name)
    if not keys or len(keys) != len(inner.args["group"].expressions):
        return None
    ordered = order.expressions[0]
    ranking = _ordered_expression(ordered.this, inner)
    metric = outer_names.get(_bare(ranking)) if ranking is not None else None
    if metric is None:
        return None
    extra_keys = len(tree.args["group"].expressions) > len(keys) if tree.args.get("group") else False
    if extra_keys and not isinstance(ranking, (exp.Count, exp.Sum)):
        return None  # an average or a distinct count does not add up over the other keys
    return keys, metric, int(count.this), bool(ordered.args.get("desc"))


def _post(tree: exp.Select, keys: list[str], metric: str, n: int, descending: bool) -> exp.Select | None:
    """SELECT r.* FROM released r JOIN (top n keys by SUM(metric)) USING (keys)
    ORDER BY <outer order> LIMIT <outer limit>, over the released rows' names."""
    names = [p.alias_or_name for p in tree.expressions]
    quoted = [exp.column(k, quoted=True) for k in keys]
    direction = "DESC" if descending else "ASC"
    top = exp.select(*quoted).from_(exp.to_table(RELEASED_ROWS, quoted=True)).group_by(*quoted)
    top = top.order_by(f'SUM("{metric}") {direction} NULLS LAST', *[f'"{k}"' for k in keys]).limit(n)
    post = exp.select(exp.Star()).from_(exp.Table(this=exp.to_identifier(RELEASED_ROWS, quoted=True),
                                                   alias=exp.TableAlias(this=exp.to_identifier("r"))))
    post = post.join(top.subquery("top"), using=[exp.to_identifier(k, quoted=True) for k in keys])
    post.set("expressions", [exp.column(name, table="r", quoted=True) for name in names])
    order = tree.args.get("order")
    if order is not None:
        ordered = []
        for key in order.expressions:
            name = _output_name(key.this, tree, names)
            if name is None:
                return None
            copy = key.copy()
            copy.set("this", exp.column(name, table="r", quoted=True))
            ordered.append(copy)
        post.set("order", exp.Order(expressions=ordered))
    for part in ("limit", "offset"):
        if tree.args.get(part) is not None:
            post.set(part, tree.args[part].copy())
    return post


def _ordered_expression(node: exp.Expression, select: exp.Select) -> exp.Expression | None:
    """What an ORDER BY key orders by: a position, an output name, or an expression."""
    if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
        position = int(node.this)
        return select.expressions[position - 1].unalias() if 1 <= position <= len(select.expressions) else None
    if isinstance(node, exp.Column) and not node.table:
        for projection in select.expressions:
            if projection.alias_or_name == node.name:
                return projection.unalias()
    return node


def _output_name(node: exp.Expression, select: exp.Select, names: list[str]) -> str | None:
    expression = _ordered_expression(node, select)
    for projection, name in zip(select.expressions, names):
        if expression is not None and _bare(projection.unalias()) == _bare(expression):
            return name
    return None


def _conjuncts(node):
    if node is None:
        return []
    return list(node.flatten()) if isinstance(node, exp.And) else [node]


def _bare(node) -> str | None:
    """The SQL of a node with its columns' table qualifiers left out (both queries
    name their one table alike, but compare what they read, not how they alias it)."""
    if node is None:
        return None
    stripped = node.copy().transform(
        lambda n: exp.column(n.name, quoted=True) if isinstance(n, exp.Column) and n.table else n)
    if isinstance(stripped, (exp.From, exp.Where)):
        stripped = stripped.this
    if isinstance(stripped, exp.Table):
        return stripped.name
    return stripped.sql(dialect="duckdb")
