"""Gaussian noise for rho-zero-concentrated DP (the policy's `accounting: zcdp`):
OpenDP's vetted measurements, calibrated and wrapped as gateway.dp.mechanisms
wraps the Laplace ones (same interface: apply, ci, ci95, std).

Each constructor takes the l2 sensitivity (the d_in of the input metric) and a
target rho, picks the smallest scale (and threshold) it finds whose OpenDP
privacy map stays within the target, and reports the map's own value as `.rho`
(and `.epsilon`, the same number, so code written for either reads one field).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Integral
from statistics import NormalDist

import opendp.prelude as dp

from gateway.dp.mechanisms import (_INT, _INT_MAX, _calibrate, _loss, _positive, _selection_sizes, _sensitivity,
                                   apply_vector, smallest_threshold)

dp.enable_features("contrib")

_CI = 0.05
_EXACT_UP_TO = 2_000.0  # discrete Gaussian tails summed exactly up to this scale, normal beyond


@functools.lru_cache(maxsize=256)
def _discrete_gaussian_weights(sigma: float) -> tuple[float, list[float]]:
    """Unnormalised P(X = x) = exp(-x^2 / (2 sigma^2)) for x = 0, 1, ..., and the total mass."""
    span = int(math.ceil(40 * sigma)) + 10
    weights = [math.exp(-x * x / (2 * sigma * sigma)) for x in range(span + 1)]
    return weights[0] + 2 * math.fsum(weights[1:]), weights


def discrete_gaussian_ci(sigma: float, tail: float) -> float:
    """Smallest integer t with P(|X| > t) <= tail for OpenDP's discrete Gaussian
    (CKS20: P(X = x) proportional to exp(-x^2 / (2 sigma^2))). Exact up to a scale of
    2,000; beyond it the normal tail with a continuity correction, 2(1 - Phi((t + 1/2) / sigma)),
    which the discrete one matches to far below a part in a million at such scales."""
    if sigma == 0:
        return 0.0
    if sigma > _EXACT_UP_TO:
        return float(max(0, math.ceil(NormalDist().inv_cdf(1 - tail / 2) * sigma - 0.5)))
    total, weights = _discrete_gaussian_weights(sigma)
    beyond = 2 * math.fsum(weights[1:]) / total  # P(|X| > 0)
    t = 0
    while beyond > tail:
        t += 1
        beyond -= 2 * weights[t] / total
    return float(t)


def discrete_gaussian_std(sigma: float) -> float:
    if sigma == 0:
        return 0.0
    if sigma > _EXACT_UP_TO:
        return sigma
    total, weights = _discrete_gaussian_weights(sigma)
    return math.sqrt(2 * math.fsum(x * x * w for x, w in enumerate(weights)) / total)


@dataclass(frozen=True, eq=False)
class GaussianNoise:
    """Additive Gaussian noise on a vector released at once (l2 sensitivity over the whole vector)."""

    mechanism: str  # "discrete_gaussian" (integers) or "gaussian" (floats)
    sensitivity: float  # d_in: l2 distance between neighbouring vectors
    rho: float  # OpenDP's map at `sensitivity`
    scale: float  # standard deviation sigma
    _measurement: object

    @property
    def epsilon(self) -> float:
        """The loss in this measurement's own measure (rho), for code that reads `.epsilon`."""
        return self.rho

    def apply(self, values: list) -> list:
        return apply_vector(self._measurement, self.mechanism == "discrete_gaussian", values)

    def ci95(self) -> float:
        return self.ci(_CI)

    def ci(self, tail: float) -> float:
        """Smallest t with P(|noise| > t) <= tail. Integers: discrete_gaussian_ci.
        Floats: sigma * Phi^-1(1 - tail / 2) (OpenDP samples a discrete Gaussian on a
        fine lattice and rounds it to a float: that quantile within the rounding)."""
        if self.mechanism == "discrete_gaussian":
            return discrete_gaussian_ci(self.scale, tail)
        return self.scale * NormalDist().inv_cdf(1 - tail / 2) if self.scale else 0.0

    def std(self) -> float:
        return discrete_gaussian_std(self.scale) if self.mechanism == "discrete_gaussian" else self.scale


def _start(d_in: float, rho: float) -> float:
    return d_in / math.sqrt(2 * rho) if d_in else 0.0


def integer_noise(l2_sensitivity: float, rho: float) -> GaussianNoise:
    """Discrete Gaussian on a vector of counts (OpenDP make_gaussian).

    Input domain: vector_domain(atom_domain(T=i64)), any length; metric:
    l2_distance(T=f64) with d_in = `l2_sensitivity` for the whole vector (a unit
    touching g groups, moving each count by at most r, is at l2 distance r sqrt(g)).
    Scale d_in / sqrt(2 rho); privacy loss rho-zCDP, as OpenDP's map reports.
    """
    d_in = float(_sensitivity(l2_sensitivity))
    rho = _positive("rho", rho)
    space = dp.vector_domain(dp.atom_domain(T=_INT)), dp.l2_distance(T=float)
    measurement, scale = _calibrate(lambda s: dp.m.make_gaussian(*space, scale=s), d_in, rho, _start(d_in, rho))
    return GaussianNoise("discrete_gaussian", d_in, _loss(measurement, d_in)[0], scale, measurement)


def float_noise(l2_sensitivity: float, rho: float) -> GaussianNoise:
    """Gaussian on a vector of sums (OpenDP make_gaussian on floats).

    Input domain: vector_domain(atom_domain(T=float, nan=False)); metric:
    l2_distance(T=float) with d_in = `l2_sensitivity`. Scale d_in / sqrt(2 rho),
    nudged up if OpenDP's rounding-aware map needs it; privacy loss rho-zCDP.
    """
    d_in = float(_sensitivity(l2_sensitivity))
    rho = _positive("rho", rho)
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    if d_in == 0:  # nothing to hide: OpenDP still wants a positive scale for floats
        measurement = dp.m.make_gaussian(*space, scale=0.0)
        return GaussianNoise("gaussian", 0.0, 0.0, 0.0, measurement)
    measurement, scale = _calibrate(lambda s: dp.m.make_gaussian(*space, scale=s), d_in, rho, _start(d_in, rho))
    return GaussianNoise("gaussian", d_in, _loss(measurement, d_in)[0], scale, measurement)


@dataclass(frozen=True, eq=False)
class GaussianPartitionSelection:
    """Noisy counts per key (discrete Gaussian); keys whose noisy count reaches `threshold` are released."""

    mechanism: str  # "discrete_gaussian_threshold"
    d_in: tuple[int, float, int]  # (l0, l2, linf): keys a unit touches, l2 and per-key change
    rho: float  # OpenDP's map at d_in
    delta: float  # corrected as gateway.dp.mechanisms._threshold_loss
    scale: float
    threshold: int
    _measurement: object

    @property
    def epsilon(self) -> float:
        return self.rho

    def apply(self, counts: dict[str, int]) -> dict[str, int]:
        for key, count in counts.items():
            if not isinstance(key, str):
                raise ValueError(f"partition keys must be strings, not {key!r}")
            if isinstance(count, bool) or not isinstance(count, Integral) or abs(count) > _INT_MAX:
                raise ValueError(f"partition counts must be 64-bit integers, not {count!r}")
        if not counts:
            return {}
        return {k: int(v) for k, v in self._measurement({k: int(v) for k, v in counts.items()}).items()}

    def ci95(self) -> float:
        return discrete_gaussian_ci(self.scale, _CI)

    def ci(self, tail: float) -> float:
        return discrete_gaussian_ci(self.scale, tail)

    def std(self) -> float:
        return discrete_gaussian_std(self.scale)


def _threshold_space():
    return (dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=_INT)),
            dp.l02inf_distance(dp.absolute_distance(T=float)))


def _threshold_loss(scale: float, threshold: int, d_in) -> tuple[float, float]:
    """(rho, delta) of make_gaussian_threshold(scale, threshold) at d_in. Like the
    Laplace one (opendp/opendp#2922), the mechanism keeps counts equal to the
    threshold: account with threshold - 1, which only over-reports delta."""
    return _loss(dp.m.make_gaussian_threshold(*_threshold_space(), scale=scale, threshold=threshold - 1), d_in)


@functools.lru_cache(maxsize=256)
def _selection(d_in: tuple[int, float, float], rho: float, delta: float) -> tuple[float, int]:
    def fits(scale: float, threshold: int) -> bool:
        spent, dlt = _threshold_loss(scale, threshold, d_in)
        return spent <= rho and dlt <= delta

    linf = int(d_in[2])
    _, scale = _calibrate(lambda s: dp.m.make_gaussian_threshold(*_threshold_space(), scale=s, threshold=linf),
                          d_in, rho, _start(d_in[1], rho))
    return scale, smallest_threshold(lambda threshold: fits(scale, threshold), linf, delta)


def partition_selection(max_partitions: int, max_contribution: int, rho: float,
                        delta: float) -> GaussianPartitionSelection:
    """Private key selection with noisy counts (OpenDP make_gaussian_threshold).

    Input domain: map_domain(atom_domain(T=str), atom_domain(T=i64)); metric:
    l02inf_distance(absolute_distance(T=f64)) with d_in = (l0, l2, linf) =
    (max_partitions, sqrt(max_partitions) * max_contribution, max_contribution).
    Discrete Gaussian of scale l2 / sqrt(2 rho) on every count; counts below the
    threshold are dropped; the threshold is the smallest whose (corrected) loss is
    within (rho, delta). Privacy loss (rho, delta)-approximate zCDP.
    """
    _selection_sizes(max_partitions, max_contribution)
    rho = _positive("rho", rho)
    if not 0 < _positive("delta", delta) < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta!r}")
    d_in = (int(max_partitions), math.sqrt(max_partitions) * max_contribution, float(max_contribution))
    scale, threshold = _selection(d_in, rho, float(delta))
    measurement = dp.m.make_gaussian_threshold(*_threshold_space(), scale=scale, threshold=threshold)
    spent, dlt = _threshold_loss(scale, threshold, d_in)
    return GaussianPartitionSelection("discrete_gaussian_threshold", (d_in[0], d_in[1], int(d_in[2])), spent, dlt,
                                      scale, threshold, measurement)
