"""How one query's privacy loss is split over its measurements, and what the
whole guarantees: an explicit sequential composition, named as OpenDP names it.

A query releases several noisy quantities (the unit count, row counts, sums,
quantiles), all computed from the same input: the bounded table, one row per
(privacy unit, group). Every quantity is a measurement on that input with

- input domain: the bounded per-unit contributions (at most max_rows_per_unit
  rows of values within their declared bounds per group, in at most
  max_groups_per_unit groups, and at most max_contributions_per_unit rows in
  all when the policy sets it);
- input metric: adding or removing one privacy unit (symmetric distance 1 on
  units, which the families turn into each quantity's own d_in);
- output measure: `max_divergence` (pure epsilon-DP, Laplace noise) or
  `zero_concentrated_divergence` (rho-zCDP, Gaussian noise), with an
  approximate part (delta) for private partition selection only.

Basic composition: the whole's loss is the sum of its parts' losses, for both
measures (OpenDP's make_composition map is that sum; tests/test_dp_families.py
checks it). The parts' losses are what each OpenDP privacy map reports at its
d_in, never what was asked for, and `Composition.of` refuses parts whose sum
exceeds the query's loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.dp.accounting import ACCOUNTINGS, PURE

# The policy's `privacy.accounting` (gateway.dp.accounting: "pure" or "zcdp"), as OpenDP names
# the output measure and the parameter its loss is given in.
MEASURES = {"pure": "max_divergence", "zcdp": "zero_concentrated_divergence"}
PARAMETERS = {"pure": "epsilon", "zcdp": "rho"}


@dataclass(frozen=True)
class PrivacyLoss:
    """epsilon (pure) or rho (zCDP), plus delta where an approximate part is spent."""

    accounting: str  # "pure" or "zcdp"
    amount: float  # epsilon under pure, rho under zcdp
    delta: float = 0.0

    def __post_init__(self):
        if self.accounting not in ACCOUNTINGS:
            raise ValueError(f"accounting must be one of {ACCOUNTINGS}, not {self.accounting!r}")
        if not (math.isfinite(self.amount) and self.amount >= 0) or not 0 <= self.delta < 1:
            raise ValueError(f"a privacy loss needs a finite amount >= 0 and delta in [0, 1), not {self}")

    @property
    def parameter(self) -> str:
        return PARAMETERS[self.accounting]

    @property
    def pure(self) -> bool:
        return self.accounting == PURE

    def scaled(self, share: float) -> "PrivacyLoss":
        """A share of the amount (delta is not split: it belongs to the one part that spends it)."""
        return PrivacyLoss(self.accounting, self.amount * share, 0.0)

    def plus(self, other: "PrivacyLoss") -> "PrivacyLoss":
        if other.accounting is not self.accounting:
            raise ValueError("cannot compose losses measured in different ways")
        return PrivacyLoss(self.accounting, self.amount + other.amount, self.delta + other.delta)

    def as_json(self) -> dict:
        return {"accounting": self.accounting, self.parameter: self.amount, "delta": self.delta}

    def __str__(self) -> str:
        text = f"{self.parameter} {self.amount:.4g}"
        return text + (f", delta {self.delta:.3g}" if self.delta else "")


@dataclass(frozen=True)
class Part:
    """One measurement of the composition: what it releases and its share of the loss."""

    name: str  # the quantity it noises (an internal column name: never shown to analysts)
    family: str  # gateway.dp.families name: units, rows, sum, centered_sum, quantile, clipped_units
    loss: PrivacyLoss  # what it may spend


@dataclass(frozen=True)
class Composition:
    """The query's measurements composed sequentially over one input."""

    accounting: str
    total: PrivacyLoss  # what the query is charged (the sum of the parts)
    parts: tuple[Part, ...]

    input_domain = ("bounded contributions of each privacy unit (max_rows_per_unit, max_groups_per_unit, "
                    "max_contributions_per_unit, bounds)")
    input_metric = "symmetric distance on privacy units (one unit added or removed)"

    @property
    def output_measure(self) -> str:
        return MEASURES[self.accounting]

    def part(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(name)

    @classmethod
    def split(cls, total: PrivacyLoss, families: list[tuple[str, str]], reserved: dict[str, float] | None = None,
              delta_to: str | None = None) -> "Composition":
        """`total` split evenly over `families` [(name, family)], after `reserved`
        {name: share of the total} is set aside for named parts; delta goes whole to
        `delta_to` (the part that selects groups privately), or to nobody."""
        reserved = dict(reserved or {})
        if any(not 0 < share < 1 for share in reserved.values()) or sum(reserved.values()) >= 1:
            raise ValueError(f"reserved shares must be in (0, 1) and sum below 1, not {reserved}")
        even = [(name, family) for name, family in families if name not in reserved]
        if not even:
            raise ValueError("nothing to split the loss over")
        left = 1.0 - sum(reserved.values())
        parts = []
        for name, family in families:
            share = reserved.get(name, left / len(even))
            loss = total.scaled(share)
            if name == delta_to:
                loss = PrivacyLoss(loss.accounting, loss.amount, total.delta)
            parts.append(Part(name, family, loss))
        return cls(total.accounting, total, tuple(parts))

    def check(self, spent: dict[str, PrivacyLoss]) -> PrivacyLoss:
        """The composed loss of what each part's OpenDP map reports (`spent` by part
        name), refused if any part or the sum exceeds what was allotted."""
        composed = PrivacyLoss(self.accounting, 0.0)
        for part in self.parts:
            loss = spent[part.name]
            if loss.amount > part.loss.amount * (1 + 1e-12) or loss.delta > part.loss.delta * (1 + 1e-12):
                raise ValueError(f"{part.name} spends {loss}, more than its share {part.loss}")
            composed = composed.plus(loss)
        if composed.amount > self.total.amount * (1 + 1e-9) or composed.delta > self.total.delta * (1 + 1e-9):
            raise ValueError(f"the parts spend {composed}, more than the query's {self.total}")  # pragma: no cover
        return composed

    def as_json(self) -> dict:
        return {"output_measure": self.output_measure, "composition": "sequential (basic): losses add",
                **self.total.as_json()}
