"""Pass 4, rewrite: the checked tree becomes the SQL DuckDB runs.

- every released row must come from at least k distinct privacy units of each
  private table: a hidden COUNT(DISTINCT unit) per group is tested after the
  analyst's HAVING, so a small group never leaves the gateway (a query without
  GROUP BY is one group). The test is a QUALIFY that also counts the groups it
  suppresses for the audit log; the release pass drops the bookkeeping;
- measures are clamped to their declared bounds before they are aggregated;
- casts become TRY_CAST, so a value cannot make the engine raise on demand;
- policy table names become the attached sources' relations.

With differential privacy (a noise plan), the SQL is instead the plan's
contribution-bounding query (gateway.dp.bounding): no threshold runs inside
the engine, since thresholds apply to noisy counts only (gateway.dp.noising).
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway import sources
from gateway.dp.bounding import bounded_sql
from gateway.engine.state import QueryState
from gateway.plan.quantiles import spelled
from gateway.plan.units import clamp, cte_names, unit_columns
from gateway.policy.model import CleanRoom, Role, Table


def rewrite(state: QueryState) -> QueryState:
    room = state.cleanroom
    if state.noise_plan is not None:
        rows = _for_engine(state.noise_plan.rows.copy(), room)
        return state.evolve(generated_sql=bounded_sql(state.noise_plan, rows, state.context.privacy.hash_key))
    tree = state.tree.copy()
    if state.authorisation.min_group_size is not None:
        if state.template is None:
            _clamp_measures(tree, {u.alias: u.table for u in state.uses})
        units = unit_columns(tree, room, state.tables_read)
        counted = _require_min_group_size(tree, units, state.authorisation.min_group_size)
        generated = _for_engine(tree, room).sql(dialect="duckdb", copy=False)  # the tree is this pass's copy
        return state.evolve(generated_sql=generated, counts_suppressed=counted)
    constant = is_constant(tree)  # before _for_engine rewrites casts
    generated = _for_engine(tree, room).sql(dialect="duckdb", copy=False)
    return state.evolve(generated_sql=generated, constant=constant)


# What a statement may contain and still have a result fixed by its text: no
# relation, no function (none can be volatile, like random() or now()), only
# literals, casts and operators. `SELECT 1`, a driver's or BI tool's liveness
# probe, is one.
_CONSTANT_NODES = (exp.Select, exp.Alias, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren,
                   exp.Neg, exp.Not, exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam, exp.Add, exp.Sub, exp.Mul, exp.Div,
                   exp.IntDiv, exp.Mod, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Is,
                   exp.DPipe)


def is_constant(tree: exp.Expression) -> bool:
    """Whether the statement's result depends on its text alone (execute then runs it once)."""
    return all(type(node) in _CONSTANT_NODES for node in tree.walk())


def _for_engine(tree: exp.Expression, room: CleanRoom) -> exp.Expression:
    tree = tree.transform(_try_cast, copy=False).transform(_quantile_cont, copy=False)
    point_at_sources(tree, room)
    return tree


def _try_cast(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
        return exp.TryCast(this=node.this, to=node.to)
    return node


def _clamp_measures(tree: exp.Expression, by_alias: dict[str, Table]) -> None:
    for column in list(tree.find_all(exp.Column)):
        table = by_alias.get(column.table)
        if table is None or column.name not in table.columns:
            continue
        spec = table.columns[column.name]
        if spec.role is Role.MEASURE and spec.bounds is not None:
            column.replace(clamp(column.copy(), spec.bounds.lower, spec.bounds.upper))


def _quantile_cont(node: exp.Expression) -> exp.Expression:
    """QUANTILE (from percentile_cont) interpolates as PostgreSQL does; from
    percentile_disc or quantile_disc it is a value of the group, as there."""
    if isinstance(node, exp.Quantile):
        name = "quantile_disc" if spelled(node).endswith("_disc") else "quantile_cont"
        return exp.Anonymous(this=name, expressions=[node.this, node.args["quantile"]])
    return node


# Appended to the outer SELECT by _require_min_group_size, read and dropped by the release
# pass by position (never by name: an analyst may name a column anything).
BOOKKEEPING_COLUMNS = 2  # kept (bool): the group passed k; suppressed (int): groups that did not


def _require_min_group_size(tree: exp.Select, units: list[tuple[exp.Column, bool]], k: int) -> bool:
    """Returns whether the bookkeeping columns were added. With window functions of its
    own (templates) the test stays in HAVING, so windows never see a small group."""
    passes = _passes_k(units, k)
    if tree.find(exp.Window) or tree.args.get("qualify"):
        having = tree.args.get("having")
        condition = passes if having is None else exp.and_(exp.paren(having.this), passes)
        tree.set("having", exp.Having(this=condition))
        return False
    # QUALIFY runs after HAVING and the window that counts what it drops; one suppressed
    # row (the first) survives when nothing else does, so the count is never lost.
    suppressed = exp.Window(this=exp.Sum(this=exp.If(this=passes.copy(), true=exp.Literal.number(0),
                                                     false=exp.Literal.number(1))))
    first = exp.EQ(this=exp.Window(this=exp.RowNumber()), expression=exp.Literal.number(1))
    tree.set("expressions", tree.expressions + [exp.alias_(passes.copy(), "__kept", quoted=True),
                                                exp.alias_(suppressed, "__suppressed", quoted=True)])
    tree.set("qualify", exp.Qualify(this=exp.or_(passes.copy(), first)))
    kept_first = exp.Ordered(this=exp.Literal.number(len(tree.expressions) - 1), desc=True)
    order = tree.args.get("order")
    tree.set("order", exp.Order(expressions=[kept_first] + (list(order.expressions) if order else [])))
    return True


def _passes_k(units: list[tuple[exp.Column, bool]], k: int) -> exp.Expression:
    conditions = []
    for unit, nullable in units:
        distinct = exp.Count(this=exp.Distinct(expressions=[unit.copy()]))
        if nullable:  # an outer join may leave this table out of a group: none is fine, a few are not
            conditions.append(exp.not_(exp.Between(this=distinct, low=exp.Literal.number(1), high=exp.Literal.number(k - 1))))
        else:
            conditions.append(exp.GTE(this=distinct, expression=exp.Literal.number(k)))
    return exp.and_(*conditions)


def point_at_sources(tree: exp.Expression, room: CleanRoom) -> None:
    """Policy tables become the attached sources' relations. A private table is read
    without the rows whose privacy unit is NULL: such a row belongs to nobody, so no
    k test or contribution bound could count it, and it never reaches an aggregate."""
    ctes = cte_names(tree)
    for node in list(tree.find_all(exp.Table)):
        if node.db or node.name in ctes or node.name not in room.tables:
            continue
        table = room.tables[node.name]
        relation = sources.relation_for(table)
        alias = exp.TableAlias(this=exp.to_identifier(node.alias_or_name, quoted=True))
        if table.public:
            relation.set("alias", alias)
            node.replace(relation)
            continue
        unit = exp.column(table.privacy_unit, quoted=True)
        rows = exp.select(exp.Star()).from_(relation).where(exp.Not(this=exp.Is(this=unit, expression=exp.null())))
        node.replace(exp.Subquery(this=rows, alias=alias))
