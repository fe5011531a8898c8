"""Quantiles: median(x), percentile_cont(q) / percentile_disc(q) WITHIN GROUP
(ORDER BY x), quantile_cont(x, q) / quantile_disc(x, q), x a measure with declared
bounds [lower, upper]. Under differential privacy all of them release the same
thing, named as the analyst wrote it: a candidate of an evenly spaced grid from
lower to upper (1,001 points) chosen by OpenDP's make_private_quantile, which
scores each candidate by how far its rank is from q n. Neither interpolation
(cont) nor a value present in the data (disc) is kept: the grid is the answer's
resolution.

Sensitivity: one unit adds at most max_rows_per_unit values to a group's list
(symmetric distance r), in at most max_groups_per_unit groups, each group's
quantile a separate release: each gets the quantity's loss divided by g (basic
composition over the groups one unit touches). max_contributions_per_unit (C)
applies only through g: a unit is in at most min(g, C) groups, so the divisor is
min(g, C); r stays each group's d_in (the map is not assumed linear in the rows a
unit adds, so fewer rows in a group are not credited). Bounding: each unit's
values in a group, clamped, at most r of them picked by a keyed hash (fewer when
C leaves the unit fewer rows there).
Measurement: permute-and-flip (pure) or the exponential mechanism (zCDP).
Post-processing: none needed (candidates lie within the bounds).

Error: a rank interval, not a value interval (a value interval would need the
data). With probability >= 95% the released candidate's score trails the best
candidate's by at most `rank_error` ranks: at most that many of the group's
values lie between the released value and the true quantile, beyond those one
grid step holds.
"""

from __future__ import annotations

from gateway.dp import mechanisms
from gateway.dp.composition import MEASURES, PrivacyLoss
from gateway.dp.families.base import TAIL, Contribution, Family, Interval, Sensitivity
from gateway.dp.families.rows import quote
from gateway.dp.plan import QUANTILE_NAMES, Kind, Output, Quantity


class Quantile(Family):
    kind = Kind.QUANTILE

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        rows = contribution.rows_per_unit
        return Sensitivity(rows, rows, per_group=rows)

    def per_unit(self, quantity: Quantity, max_rows: int, key: str) -> str:
        value = quote(quantity.value)
        ordered = (f"list({value} ORDER BY hash({value}, \"__unit\", {string(key)})) "
                   f"FILTER (WHERE {value} IS NOT NULL)")
        return f'list_slice({ordered}, 1, {max_rows}) AS {quote(quantity.column + "_l")}'

    def total(self, quantity: Quantity, allowance: str) -> str:
        column = quote(quantity.column)
        kept = f'list_slice(b.{quote(quantity.column + "_l")}, 1, {allowance})'
        return f'COALESCE(flatten(list({kept})), [])::DOUBLE[] AS {column}'

    def empty(self, quantity: Quantity) -> str:
        return "[]::DOUBLE[]"

    def measurement(self, quantity: Quantity, contribution: Contribution, loss: PrivacyLoss):
        per_group = loss.amount / contribution.groups
        return mechanisms.quantile(quantity.alpha, quantity.bounds.lower, quantity.bounds.upper,
                                   contribution.rows_per_unit, per_group, measure=MEASURES[loss.accounting])

    def noise(self, measurement, values: list) -> list:
        return [measurement.apply(v or []) for v in values]

    def describe(self, quantity: Quantity, contribution: Contribution, measurement) -> dict:
        pure = measurement.measure == "max_divergence"
        parameter = "epsilon" if pure else "rho"
        return {"mechanism": measurement.mechanism,
                parameter: measurement.epsilon * contribution.groups,
                f"{parameter}_per_group": measurement.epsilon,
                "sensitivity": contribution.rows_per_unit, "sensitivity_metric": "values per group",
                "scale": measurement.scale, "alpha": quantity.alpha, "grid_step": measurement.grid_step,
                "candidates": measurement.candidates, "rank_error95": measurement.rank_error(TAIL)}


class Quantiles:
    integer = False
    capped = "at most that many of its values enter a quantile"  # what max_rows_per_unit does (gateway.dp.notices)

    def release(self, output: Output, noisy: dict, measurements: dict) -> list[Interval]:
        return [Interval(value, None, None) for value in noisy[output.quantities[0]]]

    def interval(self, output: Output, measurements: dict) -> dict:
        measurement = measurements[output.quantities[0]]
        ranks = measurement.rank_error(TAIL)
        return {"kind": "rank", "level": 1 - TAIL, "ranks": ranks, "grid_step": measurement.grid_step,
                "text": f"at most {ranks:,.0f} of the group's values lie between it and the true quantile "
                        f"(grid step {measurement.grid_step:.4g})"}


def string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


FAMILY = Quantile()
QUANTILE = Quantiles()
RELEASES = {name: QUANTILE for name in QUANTILE_NAMES}  # named as the analyst wrote it
