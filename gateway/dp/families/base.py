"""What every aggregate family declares, and the pieces they share.

A family is one kind of noisy quantity (gateway.dp.plan.Kind) and, for the
aggregates an analyst writes, how its released value is formed from noisy
quantities. It declares:

- its sensitivity: how far one privacy unit moves the vector of its values over
  all groups (l1 for Laplace, l2 for Gaussian, a count of values for quantiles),
  from the contribution bounds and the declared value bounds only;
- its bounding SQL: what each unit contributes per group (`per_unit`), how those
  contributions add up per group (`total`, given the rows the unit may add
  there: max_rows_per_unit, or less when max_contributions_per_unit binds), and
  a group with none (`empty`);
- its OpenDP measurement, for either accounting: pure epsilon-DP (Laplace,
  permute-and-flip) or rho-zCDP (Gaussian, the exponential mechanism);
- its post-processing (free: it reads released values and public bounds only)
  and the error of each released value, as a 95% interval of the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.dp import gaussian, mechanisms
from gateway.dp.composition import PrivacyLoss
from gateway.dp.plan import Kind, Quantity

LEVEL = 0.95  # every interval: the noise stays inside it with at least this probability
TAIL = 1 - LEVEL


@dataclass(frozen=True)
class Contribution:
    """The contribution bounds one query's guarantee rests on."""

    rows_per_unit: int  # rows one unit adds to one group (r)
    groups_per_unit: int  # groups one unit appears in (g; 1 without GROUP BY)
    total_per_unit: int | None = None  # rows one unit adds to the whole query (C); None: r g bounds it

    @classmethod
    def of(cls, plan) -> "Contribution":
        privacy = plan.privacy
        return cls(privacy.max_rows_per_unit, plan.groups_per_unit,
                   getattr(privacy, "max_contributions_per_unit", None))

    @property
    def binds(self) -> bool:
        """The total bound is tighter than r g: the bounding SQL enforces it (gateway.dp.bounding)."""
        return self.total_per_unit is not None and self.total_per_unit < self.rows_per_unit * self.groups_per_unit

    @property
    def groups(self) -> int:
        """Groups one unit can be in: min(g, C). A unit with C rows has rows in at most C
        groups anyway, so the bounding keeps a unit's min(g, C) groups of lowest keyed
        hash (gateway.dp.bounding), whatever its allowance in each."""
        if self.total_per_unit is None:
            return self.groups_per_unit
        return min(self.groups_per_unit, self.total_per_unit)

    @property
    def rows_in_all(self) -> int:
        """Rows one unit adds to the whole query: min(C, r g)."""
        every = self.rows_per_unit * self.groups_per_unit
        return every if self.total_per_unit is None else min(self.total_per_unit, every)


@dataclass(frozen=True)
class Sensitivity:
    """How far one unit moves a family's vector of per-group values."""

    l1: float  # sum of |change| over groups: the Laplace d_in
    l2: float  # Euclidean norm of the change: the Gaussian d_in
    per_group: int = 0  # quantiles: values one unit adds to one group's list (symmetric distance)

    @classmethod
    def per_group_change(cls, change: float, contribution: Contribution) -> "Sensitivity":
        """A unit moves each of its groups by at most `change` (unit counts: 1 per group)."""
        groups = contribution.groups
        return cls(groups * change, math.sqrt(groups) * change)

    @classmethod
    def of_rows(cls, contribution: Contribution, magnitude: float = 1.0) -> "Sensitivity":
        """A unit keeps x_i <= r rows in each of at most g groups and sum x_i <= C rows in
        all, each row moving its group's value by at most `magnitude` (1 for a count, the
        measure's largest magnitude for a sum, half its range for a centred sum; a sum
        scaled by x_i / n_i moves by at most x_i times it).

        L1 = max sum x_i = min(C, r g).
        L2: the largest ||x||_2 over {0 <= x_i <= r, sum x_i <= C, at most g of them > 0}.
        ||x||^2 is convex, so on each polytope of a fixed support of g coordinates it
        peaks at a vertex; a vertex of a box cut by one half-space has at most one
        coordinate strictly between 0 and r (the other g - 1 active constraints are box
        faces). The largest such point puts q = min(g, floor(C / r)) coordinates at r
        and, if q < g, one at C - q r (the others at 0; more at r would break the sum):
            L2^2 = q r^2 + (C - q r)^2  (the last term only when floor(C / r) < g).
        Without C (or C >= r g) that is r^2 g, the per-group bound r sqrt(g). It never
        exceeds sqrt(r min(C, r g)) (Hoelder: ||x||_2^2 <= ||x||_inf ||x||_1), equal to
        it when r divides C, and it is reached by integer rows, so it is tight.
        tests/test_dp_total_cap.py checks it against every integer vector of small cases.
        """
        r, g = contribution.rows_per_unit, contribution.groups_per_unit
        full = g if contribution.total_per_unit is None else min(g, contribution.total_per_unit // r)
        rest = 0 if full == g else contribution.total_per_unit - full * r
        return cls(contribution.rows_in_all * magnitude, math.sqrt(full * r * r + rest * rest) * magnitude)

    def d_in(self, loss: PrivacyLoss) -> float:
        return self.l1 if loss.pure else self.l2


class Family:
    """The default: an additive-noise family. Subclasses fill in what differs."""

    kind: Kind
    integer = False  # integer values: discrete noise, integer released values

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        raise NotImplementedError

    # -- bounding SQL (gateway.dp.bounding assembles them) -------------------------------------
    def per_unit(self, quantity: Quantity, max_rows: int, key: str) -> str:
        """Columns of the per-(unit, group) aggregate, named after quantity.column."""
        raise NotImplementedError

    def total(self, quantity: Quantity, allowance: str) -> str:
        """The per-group total of the bounded contributions, named quantity.column.
        `allowance` is SQL for the rows the unit may add to this group: r, or (when
        max_contributions_per_unit binds) b."__k" <= r, what its total leaves it here."""
        raise NotImplementedError

    def empty(self, quantity: Quantity) -> str:
        """Its value for a public group no unit contributed to."""
        return "0"

    # -- noise ------------------------------------------------------------------------------
    def measurement(self, quantity: Quantity, contribution: Contribution, loss: PrivacyLoss):
        """The OpenDP measurement that noises the whole vector of this quantity at `loss`."""
        sensitivity = self.sensitivity(quantity, contribution)
        return additive(self.integer, sensitivity, loss)

    def noise(self, measurement, values: list) -> list:
        return measurement.apply(values)

    def describe(self, quantity: Quantity, contribution: Contribution, measurement) -> dict:
        """What the analyst is told of how the quantity was noised."""
        sensitivity = self.sensitivity(quantity, contribution)
        return describe_additive(measurement, sensitivity)


def additive(integer: bool, sensitivity: Sensitivity, loss: PrivacyLoss):
    """Laplace (pure) or Gaussian (zCDP) noise on a vector, discrete for integers."""
    if loss.pure:
        if integer:
            return mechanisms.integer_noise(int(sensitivity.l1), loss.amount)
        return mechanisms.float_noise(float(sensitivity.l1), loss.amount)
    if integer:
        return gaussian.integer_noise(sensitivity.l2, loss.amount)
    return gaussian.float_noise(sensitivity.l2, loss.amount)


def describe_additive(measurement, sensitivity: Sensitivity) -> dict:
    pure = not isinstance(measurement, (gaussian.GaussianNoise, gaussian.GaussianPartitionSelection))
    return {"mechanism": measurement.mechanism,
            "epsilon" if pure else "rho": measurement.epsilon,
            "sensitivity": sensitivity.l1 if pure else sensitivity.l2,
            "sensitivity_metric": "l1" if pure else "l2",
            "scale": measurement.scale, "ci95": measurement.ci95()}


@dataclass(frozen=True)
class Interval:
    """A released value and the interval its noise-free value lies in with 95% probability."""

    value: float | int | None
    low: float | int | None
    high: float | int | None


def within(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def feasible_sum(bounds) -> tuple[float, float]:
    """Where any sum of values within `bounds` lies: never negative for a measure in
    [0, upper], never positive for one in [lower, 0]."""
    return (0.0 if bounds.lower >= 0 else -math.inf), (0.0 if bounds.upper <= 0 else math.inf)


def additive_interval(raw: float, half_width: float, low: float, high: float, integer: bool) -> Interval:
    """[raw - h, raw + h] of an additive noise whose 95% half-width is h, then the
    value and both ends projected onto [low, high], where the true value is known to
    lie: a projection onto an interval never moves the estimate further from a true
    value inside it, so the interval keeps its coverage."""
    value = within(raw, low, high)
    lo, hi = within(raw - half_width, low, high), within(raw + half_width, low, high)
    if integer:
        return Interval(int(value), int(lo), int(hi))
    return Interval(value, lo, hi)
