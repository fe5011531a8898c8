"""Aggregates and window functions, resolved: the part of the expression visitor
(gateway.plan.expressions.Expressions, passed in as `expressions`) that types an
aggregate by the registry (gateway.policy.aggregates), normalises quantiles
(gateway.plan.quantiles), and checks where aggregates and windows may stand.
Kept apart from the scalar expressions it calls back into, as gateway.plan.scoring is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan import arithmetic, quantiles, scoring
from gateway.plan.allowed import AGGREGATES, function_name
from gateway.plan.arithmetic import mark as _mark
from gateway.plan.arithmetic import typed
from gateway.plan.checks import only as _only
from gateway.plan.checks import refuse_unknown, window_spec
from gateway.plan.clauses import Clause, aggregate_here, expect
from gateway.plan.types import UNBOUNDED, Kind, Range, Typed
from gateway.policy.aggregates import BY_NODE
from gateway.policy.model import Role

if TYPE_CHECKING:
    from gateway.plan.expressions import Expressions

BIGINT, HUGEINT = arithmetic.INTEGER_WIDTHS[1][1], arithmetic.INTEGER_WIDTHS[2][1]
COUNTED = Typed(Kind.INTEGER, Range(0, 2.0 ** 53), width=BIGINT, aggregate=True)  # no count reaches 2**53


def aggregate(expressions: "Expressions", node: exp.Expression, clause: Clause) -> exp.Expression:
    if node.find_ancestor(*AGGREGATES) is not None:
        raise Refused("aggregates cannot be nested", rule="aggregate.nested")
    if not clause.aggregates:
        raise aggregate_here(clause)
    inner = Clause(f"{function_name(node).upper()}()", outputs=None)
    if isinstance(node, exp.Count):
        _only(node, "this", "big_int")
        argument = node.this
        if argument is None or isinstance(argument, exp.Star):
            if argument is not None:
                _only(argument)
            built = exp.Count(this=exp.Star(), big_int=node.args.get("big_int"))
            return _mark(built, COUNTED)
        built = exp.Count(this=aggregated(expressions, argument, inner), big_int=node.args.get("big_int"))
        return _mark(built, COUNTED)
    if isinstance(node, exp.Quantile):
        _only(node, "this", "quantile")
        fraction = node.args["quantile"]
        value = _summable(aggregated(expressions, node.this, inner))
        built = exp.Quantile(this=value, quantile=exp.Literal.number(fraction.this))
        built.meta["quantile"] = quantiles.spelled(node)  # how it was written
        return _mark(built, Typed(Kind.FLOAT, typed(value).range, aggregate=True))
    _only(node, "this")
    spec = BY_NODE[type(node)]  # the aggregate registry (gateway.policy.aggregates)
    value = aggregated(expressions, node.this, inner)
    if spec.numeric:
        value = _summable(value)
    annotation = typed(value)
    join_key = isinstance(value, exp.Column) and getattr(value.meta.get("declared"), "role", None) is Role.JOIN_KEY
    if spec.numeric and not annotation.kind.numeric \
            and annotation.kind is not Kind.NULL and not join_key:  # authorise refuses join keys by role
        raise Refused(f"{function_name(node).upper()} takes a number", rule="expr.type")
    if spec.result == "sum":
        width = HUGEINT if annotation.kind is Kind.INTEGER else None
        result = annotation.with_(range=UNBOUNDED, width=width, aggregate=True)
    elif spec.result == "float":
        result = Typed(Kind.FLOAT, annotation.range, aggregate=True)
    else:
        result = annotation.with_(aggregate=True)
    return _mark(type(node)(this=value), result)


def aggregated(expressions: "Expressions", argument: exp.Expression, clause: Clause) -> exp.Expression:
    if isinstance(argument, exp.Star) or (isinstance(argument, exp.Distinct)
                                          and any(isinstance(e, exp.Star) for e in argument.expressions)):
        raise Refused("a whole row (*) can only be counted as COUNT(*)", rule="bind.row_reference")
    if isinstance(argument, exp.Distinct):
        _only(argument, "expressions")
        if len(argument.expressions) != 1:
            raise Refused("DISTINCT inside an aggregate takes one expression", rule="aggregate.not_allowed")
        value = expressions(argument.expressions[0], clause)
        return _mark(exp.Distinct(expressions=[value]), typed(value))
    return expressions(argument, clause)


def within_group(expressions: "Expressions", node: exp.WithinGroup, clause: Clause) -> exp.Expression:
    """percentile_cont / percentile_disc (q) WITHIN GROUP (ORDER BY x) is QUANTILE(x, q) (gateway.plan.quantiles)."""
    _only(node, "this", "expression")
    return aggregate(expressions, quantiles.from_within_group(node), clause)


def anonymous(expressions: "Expressions", node: exp.Anonymous, clause: Clause) -> exp.Expression:
    """quantile_cont(x, q) / quantile_disc(x, q) likewise; score('model', ...) (gateway.plan.scoring);
    any other function the parser did not know is refused."""
    if str(node.name).lower() == scoring.SCORE:
        return scoring.resolve_score(expressions, node, clause)
    if str(node.name).lower() not in quantiles.FUNCTIONS:
        refuse_unknown(node)
    return aggregate(expressions, quantiles.from_function(node), clause)


def filtered(expressions: "Expressions", node: exp.Filter, clause: Clause) -> exp.Expression:
    _only(node, "this", "expression")
    where = node.expression
    _only(where, "this")
    aggregate = expressions(node.this, clause)
    if not isinstance(aggregate, tuple(AGGREGATES)):
        raise Refused("FILTER applies to an aggregate", rule="bind.unsupported")
    condition = expressions(where.this, Clause("FILTER"))
    expect(condition, (Kind.BOOLEAN,), node)
    return _mark(exp.Filter(this=aggregate, expression=exp.Where(this=condition)), typed(aggregate))


def window(expressions: "Expressions", node: exp.Window, clause: Clause) -> exp.Expression:
    _only(node, "this", "partition_by", "order", "spec", "over")
    if not (clause.windows and expressions.resolver.windows):
        raise Refused("window functions are not allowed", rule="query.window_function",
                      hint="ad-hoc queries may not use them; an approved template may")
    inner = Clause(clause.name, aggregates=True)
    function = node.this
    if isinstance(function, (exp.RowNumber, exp.Rank, exp.DenseRank)):
        _only(function)
        call = _mark(type(function)(), COUNTED.with_(aggregate=False))
    elif isinstance(function, tuple(AGGREGATES)):
        call = aggregate(expressions, function, inner)
    else:
        refuse_unknown(function)
    partition = [expressions(p, Clause("PARTITION BY", aggregates=True)) for p in node.args.get("partition_by") or []]
    order = expressions.resolver.order_keys(node.args.get("order"), expressions, Clause("ORDER BY", aggregates=True))
    built = exp.Window(this=call, partition_by=partition or None, order=order,
                       spec=window_spec(node.args.get("spec")), over="OVER")
    return _mark(built, typed(call).with_(aggregate=False))


def _summable(value: exp.Expression) -> exp.Expression:
    """arithmetic.summable, inside DISTINCT where the aggregate has one."""
    if isinstance(value, exp.Distinct):
        inner = arithmetic.summable(value.expressions[0])
        return _mark(exp.Distinct(expressions=[inner]), typed(inner))
    return arithmetic.summable(value)
