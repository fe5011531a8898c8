"""Unit count: COUNT(DISTINCT unit) per group, released for every query (it is
what min_group_size and private group selection are applied to).

Sensitivity: a unit is in at most max_groups_per_unit groups, once each, and
with max_contributions_per_unit C the bounding keeps it in at most min(g, C):
l1 = min(g, C), l2 = sqrt(min(g, C)). Bounding: the per-(unit, group) rows are one row each, so the count
of bounded rows per group is the count of units. Measurement: on public keys,
(discrete) Laplace or Gaussian on the vector of counts; on keys not known from
the policy, OpenDP's threshold mechanisms select the groups (Laplace threshold,
epsilon-delta; Gaussian threshold, approximate zCDP), their noisy counts being
the released ones. Post-processing: a count is a non-negative integer.
"""

from __future__ import annotations

from gateway.dp import gaussian, mechanisms
from gateway.dp.composition import PrivacyLoss
from gateway.dp.families.base import (TAIL, Contribution, Family, Interval, Sensitivity, additive_interval,
                                      describe_additive)
from gateway.dp.plan import Kind, Output, Quantity


class Units(Family):
    kind = Kind.UNITS
    integer = True

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        return Sensitivity.per_group_change(1, contribution)

    def per_unit(self, quantity, max_rows, key) -> str:
        return ""  # one bounded row per (unit, group) already

    def total(self, quantity, allowance) -> str:
        return 'COUNT(*) AS "__units"'

    def selection(self, contribution: Contribution, loss: PrivacyLoss):
        """Private group selection: noisy unit counts, and only those over a threshold set by delta."""
        if loss.pure:
            return mechanisms.partition_selection(contribution.groups, 1, loss.amount, loss.delta)
        return gaussian.partition_selection(contribution.groups, 1, loss.amount, loss.delta)

    def describe(self, quantity, contribution, measurement) -> dict:
        info = describe_additive(measurement, self.sensitivity(quantity, contribution))
        if hasattr(measurement, "threshold"):
            info.update(threshold=measurement.threshold, delta=measurement.delta)
        return info


class Counts:
    """Released counts (COUNT(DISTINCT unit), COUNT(*), COUNT(x)): non-negative integers,
    each within ±h of its noise-free value with 95% probability, h the noise's own quantile."""

    integer = True

    def __init__(self, capped: str | None = None):
        self.capped = capped  # what max_rows_per_unit does to it (gateway.dp.notices); None: nothing

    def release(self, output: Output, noisy: dict, measurements: dict) -> list[Interval]:
        half_width = measurements[output.quantities[0]].ci(TAIL)
        return [additive_interval(raw, half_width, 0, float("inf"), integer=True) for raw in noisy[output.quantities[0]]]

    def interval(self, output: Output, measurements: dict) -> dict:
        half_width = measurements[output.quantities[0]].ci(TAIL)
        return {"kind": "plus_minus", "level": 1 - TAIL, "half_width": half_width,
                "text": f"±{half_width:,.0f}", "clamped_to": [0, None]}


FAMILY = Units()
COUNT_DISTINCT = Counts()
RELEASES = {"count_distinct": COUNT_DISTINCT}  # released aggregates by name (gateway.policy.aggregates)
