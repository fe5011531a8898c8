"""Clipped units (policy `privacy.report_clipping: share`): per released group, a
noisy count of the units with more rows in it than they may add there
(max_rows_per_unit, or less when max_contributions_per_unit binds), whose rows
beyond were left out of counts and quantiles and whose sums were scaled down.
It tells the analyst how much the caps may bias that group.

Sensitivity: a unit is in at most min(max_groups_per_unit,
max_contributions_per_unit) groups and counts once in each: l1 = g, l2 = sqrt(g)
for that g. Bounding: every unit's rows per group are counted (before any cap),
and the units over their allowance counted per group. Measurement:
(discrete) Laplace or Gaussian, the policy's share of the query's loss.
Post-processing and error: as every count.
"""

from __future__ import annotations

from gateway.dp.families.base import Contribution, Family, Sensitivity
from gateway.dp.families.rows import quote
from gateway.dp.families.units import Counts
from gateway.dp.plan import Kind, Quantity


class ClippedUnits(Family):
    kind = Kind.CLIPPED_UNITS
    integer = True

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        return Sensitivity.per_group_change(1, contribution)

    def per_unit(self, quantity: Quantity, max_rows: int, key: str) -> str:
        return f'COUNT(*) AS {quote(quantity.column + "_n")}'

    def total(self, quantity: Quantity, allowance: str) -> str:
        over = f'b.{quote(quantity.column + "_n")} > {allowance}'
        return f'COUNT(*) FILTER (WHERE {over})::BIGINT AS {quote(quantity.column)}'


FAMILY = ClippedUnits()
CLIPPED = Counts()
RELEASES: dict = {}  # not an aggregate an analyst writes
