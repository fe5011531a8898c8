"""Row count: COUNT(*) and COUNT(x) per group.

Sensitivity: a unit adds at most max_rows_per_unit (r) rows to each of at most
max_groups_per_unit (g) groups, and at most max_contributions_per_unit (C) rows
in all when set: l1 = min(C, r g), l2 = r sqrt(g) without C
(Sensitivity.of_rows derives the L2 bound with C). Bounding: each unit's rows per
group are counted, then capped at what the unit may add there (r, or what its
total C leaves it in that group). Measurement: (discrete)
Laplace or Gaussian on the vector of counts. Post-processing and error: as every
count (gateway.dp.families.units.Counts).
"""

from __future__ import annotations

from gateway.dp.families.base import Contribution, Family, Sensitivity
from gateway.dp.families.units import Counts
from gateway.dp.plan import Kind, Quantity


class Rows(Family):
    kind = Kind.ROWS
    integer = True

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        return Sensitivity.of_rows(contribution)

    def per_unit(self, quantity: Quantity, max_rows: int, key: str) -> str:
        counted = "*" if quantity.value is None else quote(quantity.value)
        return f'COUNT({counted}) AS {quote(quantity.column + "_n")}'

    def total(self, quantity: Quantity, allowance: str) -> str:
        return (f'COALESCE(SUM(LEAST(b.{quote(quantity.column + "_n")}, {allowance})), 0)::BIGINT '
                f'AS {quote(quantity.column)}')


def quote(name: str) -> str:
    return '"' + name + '"'


FAMILY = Rows()
COUNT = Counts(capped="its rows beyond are not counted")
RELEASES = {"count": COUNT}
