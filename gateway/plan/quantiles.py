"""Quantile aggregates as analysts write them, normalised to QUANTILE(x, q) with
the spelling noted on the node (`meta["quantile"]`): the exact query needs it
(percentile_disc returns a value of the group, percentile_cont interpolates),
and under differential privacy the result is named by it
(gateway/dp/families/quantiles.py).

    median(x)                                       (exp.Median, kept as is)
    percentile_cont(q) WITHIN GROUP (ORDER BY x)    -> QUANTILE(x, q), "percentile_cont"
    percentile_disc(q) WITHIN GROUP (ORDER BY x)    -> QUANTILE(x, q), "percentile_disc"
    quantile_cont(x, q), quantile_disc(x, q)        -> QUANTILE(x, q), "quantile_cont" / "quantile_disc"
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.errors import Refused

_WITHIN_GROUP = {exp.PercentileCont: "percentile_cont", exp.PercentileDisc: "percentile_disc"}
FUNCTIONS = ("quantile_cont", "quantile_disc")  # DuckDB's spellings, parsed as anonymous functions


def from_within_group(node: exp.WithinGroup) -> exp.Quantile:
    order, function = node.expression, node.this
    name = _WITHIN_GROUP.get(type(function))
    fraction = function.this if name is not None else None
    if not (isinstance(order, exp.Order) and len(order.expressions) == 1 and _fraction(fraction)):
        raise Refused(f"{name or 'percentile_cont'} takes one fraction between 0 and 1 and one ORDER BY "
                      "expression", rule="aggregate.quantile")
    if order.expressions[0].args.get("desc"):  # read as ascending it would be the other quantile
        raise Refused(f"{name} WITHIN GROUP (ORDER BY ... DESC) is not supported",
                      rule="aggregate.quantile", hint=f"write {name}(1 - q) WITHIN GROUP (ORDER BY ...)")
    return _noted(exp.Quantile(this=order.expressions[0].this, quantile=fraction), name)


def from_function(node: exp.Anonymous) -> exp.Quantile:
    name, arguments = str(node.name).lower(), node.expressions
    if len(arguments) != 2 or not _fraction(arguments[1]):
        raise Refused(f"{name} takes a value and one fraction between 0 and 1", rule="aggregate.quantile")
    return _noted(exp.Quantile(this=arguments[0], quantile=arguments[1]), name)


def spelled(node: exp.Quantile) -> str:
    return node.meta.get("quantile", "percentile_cont")


def _noted(node: exp.Quantile, name: str) -> exp.Quantile:
    node.meta["quantile"] = name
    return node


def _fraction(node) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and 0 <= float(node.this) <= 1
