"""Every aggregate a rule may allow, in one table: its policy name, the sqlglot
nodes it is written as, how the resolver types it, and which noisy quantities
release it under differential privacy.

Everything else is derived from this table: the policy model's Aggregate enum,
the enum of the JSON Schema's `aggregates` (filled in by the loader), the
resolver's allow-list (gateway.plan.allowed.AGGREGATES) and the verifier's,
and the noise plan of an aggregate without special arguments
(gateway.dp.plan). A new aggregate is an entry here and a module in
gateway/dp/families that releases it (docs/contributing.md);
tests/test_aggregate_registry.py checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import expressions as exp


@dataclass(frozen=True)
class AggregateKind:
    name: str  # as rules spell it in `aggregates:`
    nodes: tuple[type[exp.Expression], ...]  # what the resolver builds for it; () when another entry's node is reused
    numeric: bool  # takes a number (a join key only as COUNT(DISTINCT ...)); MIN and MAX take any value
    result: str  # the resolver's type of its value: "same" as its argument, "float", "sum" (wider, unbounded)
    noised_as: tuple[str, ...]  # under DP: the kinds of noisy quantity (gateway.dp.families) it is formed from;
    # () when it cannot be released with noise. COUNT, COUNT(DISTINCT) and quantiles are planned by their own
    # branches in gateway.dp.plan (their arguments are special); the rest by these kinds alone.


AGGREGATE_KINDS: tuple[AggregateKind, ...] = (
    AggregateKind("count", (exp.Count,), numeric=False, result="count", noised_as=("rows",)),
    # COUNT(DISTINCT x): exp.Count with a Distinct argument, told apart where it is checked
    AggregateKind("count_distinct", (), numeric=False, result="count", noised_as=("units",)),
    AggregateKind("sum", (exp.Sum,), numeric=True, result="sum", noised_as=("sum",)),
    # midpoint + noisy SUM(x - midpoint) / noisy COUNT(x)
    AggregateKind("avg", (exp.Avg,), numeric=True, result="float", noised_as=("centered_sum", "rows")),
    AggregateKind("min", (exp.Min,), numeric=False, result="same", noised_as=()),
    AggregateKind("max", (exp.Max,), numeric=False, result="same", noised_as=()),
    # median(x); percentile_cont / percentile_disc (q) WITHIN GROUP (ORDER BY x) and quantile_cont /
    # quantile_disc (x, q) are normalised to exp.Quantile by the resolver (gateway.plan.quantiles)
    AggregateKind("median", (exp.Median, exp.Quantile), numeric=True, result="same", noised_as=("quantile",)),
)

BY_NAME: dict[str, AggregateKind] = {kind.name: kind for kind in AGGREGATE_KINDS}
BY_NODE: dict[type[exp.Expression], AggregateKind] = {node: kind for kind in AGGREGATE_KINDS for node in kind.nodes}
NAMES: tuple[str, ...] = tuple(BY_NAME)
