"""Sum: SUM(x) per group, x a measure with declared bounds [lower, upper].

Sensitivity: a unit adds at most max_rows_per_unit (r) values of magnitude at
most m = max(|lower|, |upper|) to each of at most max_groups_per_unit (g) groups,
and at most max_contributions_per_unit (C) values in all when set:
l1 = m min(C, r g), l2 = m times the row count's l2 (r sqrt(g) without C).
Bounding: values are clamped into the bounds (in the rows stage); a unit with
n rows in a group, allowed a <= r there (r, or what C leaves it), adds its sum
scaled by min(1, a / n): at most a m. Measurement: Laplace or Gaussian on the vector
of sums (OpenDP's floating-point-safe samplers). Post-processing: a sum of values
in [0, upper] is never negative (of values in [lower, 0], never positive); the
interval is clamped the same way, which keeps its coverage.
"""

from __future__ import annotations

from gateway.dp.families.base import (TAIL, Contribution, Family, Interval, Sensitivity, additive_interval,
                                      feasible_sum)
from gateway.dp.families.rows import quote
from gateway.dp.plan import Kind, Output, Quantity


class Sum(Family):
    kind = Kind.SUM

    def magnitude(self, quantity: Quantity) -> float:
        return max(abs(quantity.bounds.lower), abs(quantity.bounds.upper))

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        return Sensitivity.of_rows(contribution, self.magnitude(quantity))

    def summed(self, quantity: Quantity) -> str:
        return quote(quantity.value)

    def per_unit(self, quantity: Quantity, max_rows: int, key: str) -> str:
        return (f'SUM({self.summed(quantity)}) AS {quote(quantity.column + "_s")}, '
                f'COUNT({quote(quantity.value)}) AS {quote(quantity.column + "_n")}')

    def total(self, quantity: Quantity, allowance: str) -> str:
        # a unit with n values over its allowance a adds its sum scaled by a / n:
        # at most what a values within the bounds could add
        scale = f'LEAST(1.0, {allowance} / b.{quote(quantity.column + "_n")})'
        return f'COALESCE(SUM(b.{quote(quantity.column + "_s")} * {scale}), 0)::DOUBLE AS {quote(quantity.column)}'


class Sums:
    """Released sums: within the sums the bounds allow, ±h with 95% probability."""

    integer = False
    capped = "its sum is scaled down to that many rows"  # what max_rows_per_unit does (gateway.dp.notices)

    def release(self, output: Output, noisy: dict, measurements: dict) -> list[Interval]:
        half_width = measurements[output.quantities[0]].ci(TAIL)
        low, high = feasible_sum(output.bounds)
        return [additive_interval(raw, half_width, low, high, integer=False) for raw in noisy[output.quantities[0]]]

    def interval(self, output: Output, measurements: dict) -> dict:
        half_width = measurements[output.quantities[0]].ci(TAIL)
        low, high = feasible_sum(output.bounds)
        return {"kind": "plus_minus", "level": 1 - TAIL, "half_width": half_width, "text": f"±{half_width:,.4g}",
                "clamped_to": [None if low == float("-inf") else low, None if high == float("inf") else high]}


FAMILY = Sum()
SUM = Sums()
RELEASES = {"sum": SUM}
