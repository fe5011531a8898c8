"""Aggregate families, one module each: unit count (units), row count (rows),
sum (sums), centred sum and average (averages), quantile (quantiles), and the
optional count of clipped units (clipping). gateway.dp.families.base says what a
family declares. A new aggregate is one module here, its entries below, and its
allow-list entry in gateway/plan/allowed.py.
"""

from __future__ import annotations

from gateway.dp.families import averages, clipping, quantiles, rows, sums, units
from gateway.dp.families.base import Contribution, Family, Interval
from gateway.dp.plan import QUANTILE_NAMES, Kind

# Noisy quantities by kind: sensitivity, bounding SQL, measurement.
QUANTITIES: dict[Kind, Family] = {
    family.kind: family
    for family in (units.FAMILY, rows.FAMILY, sums.FAMILY, averages.FAMILY, quantiles.FAMILY, clipping.FAMILY)
}

# Released aggregates by Output.aggregate: post-processing and error of the released value.
AGGREGATES = {
    "count_distinct": units.COUNT_DISTINCT,
    "count": rows.COUNT,
    "sum": sums.SUM,
    "avg": averages.AVG,
    **{name: quantiles.QUANTILE for name in QUANTILE_NAMES},
}

__all__ = ["AGGREGATES", "QUANTITIES", "Contribution", "Family", "Interval"]
