"""The noise itself: OpenDP's vetted measurements, calibrated and wrapped.

Every release here goes through an OpenDP measurement (exact samplers fed by
the operating system's randomness; nothing here seeds, draws or rounds noise by
hand, and nothing a query or DuckDB does reaches the sampler). Each constructor
takes the sensitivity as the d_in of the measurement's input metric and a
target epsilon (and delta); it picks the smallest scale (and threshold) it
finds whose OpenDP privacy map stays within the target, and reports the loss
the map gives for that d_in as `.epsilon` (`.delta`), never the requested one.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from numbers import Integral, Real

import opendp.prelude as dp

dp.enable_features("contrib")

_INT = "i64"  # OpenDP's `int` is i32: counts of a large table would not fit
_INT_MAX = 2**63 - 1
_FLOAT_MAX = sys.float_info.max
_CI = 0.05  # ci95: the half-width t with P(|noise| > t) <= 5%


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


def _sensitivity(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"sensitivity must be a finite number >= 0, not {value!r}")
    return value


def _loss(measurement, d_in) -> tuple[float, float]:
    """(epsilon, delta) that OpenDP's privacy map reports at d_in."""
    loss = measurement.map(d_in)
    return (float(loss[0]), float(loss[1])) if isinstance(loss, tuple) else (float(loss), 0.0)


def _calibrate(build, d_in, epsilon: float, scale: float):
    """Build at `scale`, nudged up while OpenDP's map (which rounds against us) exceeds epsilon."""
    for attempt in range(60):
        measurement = build(scale)
        if _loss(measurement, d_in)[0] <= epsilon:
            return measurement, scale
        scale *= 1 + 2.0 ** (attempt - 50)
    raise RuntimeError(f"no scale found within epsilon {epsilon}")  # pragma: no cover


def discrete_laplace_ci95(scale: float) -> float:
    """Exact: the smallest integer t with P(|X| > t) <= 5% (discrete_laplace_ci)."""
    return discrete_laplace_ci(scale, _CI)


def discrete_laplace_ci(scale: float, tail: float) -> float:
    """Exact: the smallest integer t with P(|X| > t) <= tail for OpenDP's discrete
    Laplace, P(X = x) proportional to exp(-|x| / scale), where
    P(|X| > t) = 2 exp(-(t + 1) / scale) / (1 + exp(-1 / scale))."""
    if scale == 0:
        return 0.0

    def beyond(t: int) -> float:
        return 2 * math.exp(-(t + 1) / scale) / (1 + math.exp(-1 / scale))

    t = max(0, math.ceil(-scale * math.log(tail * (1 + math.exp(-1 / scale)) / 2)) - 1)
    while beyond(t) > tail:
        t += 1
    while t > 0 and beyond(t - 1) <= tail:
        t -= 1
    return float(t)


def discrete_laplace_std(scale: float) -> float:
    """Exact standard deviation of that discrete Laplace: sqrt(2a) / (1 - a), a = exp(-1/scale)."""
    return 0.0 if scale == 0 else math.sqrt(2 * math.exp(-1 / scale)) / -math.expm1(-1 / scale)


@dataclass(frozen=True, eq=False)
class VectorNoise:
    """Additive Laplace noise on a vector released at once (l1 sensitivity over the whole vector)."""

    mechanism: str  # "discrete_laplace" (integers) or "laplace" (floats)
    sensitivity: float  # d_in: l1 distance between neighbouring vectors
    epsilon: float  # OpenDP's map at `sensitivity`
    scale: float  # noise scale b (Laplace density proportional to exp(-|x|/b))
    _measurement: object

    def apply(self, values: list) -> list:
        return apply_vector(self._measurement, self.mechanism == "discrete_laplace", values)

    def ci95(self) -> float:
        """Half-width of the central 95% interval of the noise on one element."""
        return self.ci(_CI)

    def ci(self, tail: float) -> float:
        """Smallest t with P(|noise| > t) <= tail on one element. Integers: exact
        (discrete_laplace_ci). Floats: scale * ln(1 / tail), exact for the continuous
        Laplace; OpenDP samples it on a 2^-1074 lattice rounded to the nearest float,
        so the true quantile differs by at most that rounding."""
        if self.mechanism == "discrete_laplace":
            return discrete_laplace_ci(self.scale, tail)
        return self.scale * math.log(1 / tail)

    def std(self) -> float:
        """Standard deviation of the noise on one element (exact for both)."""
        if self.mechanism == "discrete_laplace":
            return discrete_laplace_std(self.scale)
        return math.sqrt(2) * self.scale


def integer_noise(sensitivity: int, epsilon: float) -> VectorNoise:
    """Discrete Laplace on a vector of counts (OpenDP make_laplace).

    Input domain: vector_domain(atom_domain(T=i64)), any length; metric:
    l1_distance(T=i64) with d_in = `sensitivity` for the whole vector (a unit moves
    the sum of |changes| over all elements by at most that). Scale
    sensitivity / epsilon; privacy loss epsilon-DP (pure), as OpenDP's map reports.
    """
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, Integral):
        raise ValueError(f"integer sensitivity needed, not {sensitivity!r}")
    d_in = int(_sensitivity(sensitivity))
    epsilon = _positive("epsilon", epsilon)
    space = dp.vector_domain(dp.atom_domain(T=_INT)), dp.l1_distance(T=_INT)
    measurement, scale = _calibrate(lambda s: dp.m.make_laplace(*space, scale=s), d_in, epsilon, d_in / epsilon)
    return VectorNoise("discrete_laplace", d_in, _loss(measurement, d_in)[0], scale, measurement)


def float_noise(sensitivity: float, epsilon: float) -> VectorNoise:
    """Floating-point-safe Laplace on a vector of sums (OpenDP make_laplace).

    Input domain: vector_domain(atom_domain(T=float, nan=False)), any length, NaN
    and infinities refused; metric: l1_distance(T=float) with d_in = `sensitivity`
    for the whole vector. Scale sensitivity / epsilon (nudged up if OpenDP's
    rounding-aware map needs it); privacy loss epsilon-DP (pure).
    """
    d_in = float(_sensitivity(sensitivity))
    epsilon = _positive("epsilon", epsilon)
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
    measurement, scale = _calibrate(lambda s: dp.m.make_laplace(*space, scale=s), d_in, epsilon, d_in / epsilon)
    return VectorNoise("laplace", d_in, _loss(measurement, d_in)[0], scale, measurement)


@dataclass(frozen=True, eq=False)
class PartitionSelection:
    """Noisy counts per key; only keys whose noisy count reaches `threshold` are released."""

    mechanism: str  # "discrete_laplace_threshold"
    d_in: tuple[int, int, int]  # (l0, l1, linf): keys a unit touches, total and per-key change
    epsilon: float  # OpenDP's map at d_in
    delta: float  # OpenDP's map at d_in, corrected (see _threshold_loss); <= the requested delta
    scale: float  # discrete Laplace scale of every count
    threshold: int  # noisy counts below it are dropped
    _measurement: object

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
        """Exact 95% half-width of the noise on a released count (before the threshold cut)."""
        return discrete_laplace_ci95(self.scale)

    def ci(self, tail: float) -> float:
        return discrete_laplace_ci(self.scale, tail)


def _threshold_space():
    return (dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=_INT)),
            dp.l01inf_distance(dp.absolute_distance(T=_INT)))


def _threshold_loss(scale: float, threshold: int, d_in: tuple[int, int, int]) -> tuple[float, float]:
    """(epsilon, delta) of make_laplace_threshold(scale, threshold) at d_in.

    OpenDP 0.16's map takes delta from P(noise > threshold - linf), but the
    mechanism also keeps noisy counts equal to the threshold, so a key held by one
    unit is released with P(noise >= threshold - linf): the map under-reports
    (opendp/opendp#2922, tests/test_dp_mechanisms.py shows it). We account with
    threshold - 1, whose map is exactly that probability (times l0 keys).
    """
    return _loss(dp.m.make_laplace_threshold(*_threshold_space(), scale=scale, threshold=threshold - 1), d_in)


@functools.lru_cache(maxsize=256)
def _selection(d_in: tuple[int, int, int], epsilon: float, delta: float) -> tuple[float, int]:
    """(scale, smallest threshold) whose corrected loss at d_in is within (epsilon, delta)."""
    def fits(scale: float, threshold: int) -> bool:
        eps, dlt = _threshold_loss(scale, threshold, d_in)
        return eps <= epsilon and dlt <= delta

    linf = d_in[2]
    _, scale = _calibrate(
        lambda s: dp.m.make_laplace_threshold(*_threshold_space(), scale=s, threshold=linf), d_in, epsilon,
        d_in[1] / epsilon)
    return scale, smallest_threshold(lambda threshold: fits(scale, threshold), linf, delta)


def smallest_threshold(fits, linf: int, delta: float) -> int:
    """The least threshold above linf that fits. Delta falls as the threshold rises:
    double until one fits, then bisect."""
    low, high = linf + 1, 2 * linf + 1
    while not fits(high):
        low, high = high, 2 * high
        if high > _INT_MAX // 2:
            raise ValueError(f"no threshold reaches delta {delta}")  # pragma: no cover
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return low if fits(low) else high


def _selection_sizes(max_partitions, max_contribution) -> None:
    for name, value in (("max_partitions", max_partitions), ("max_contribution", max_contribution)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, not {value!r}")


def partition_selection(max_partitions: int, max_contribution: int, epsilon: float,
                        delta: float) -> PartitionSelection:
    """Private key selection with noisy counts (OpenDP make_laplace_threshold).

    Input domain: map_domain(atom_domain(T=str), atom_domain(T=i64)), key -> count;
    metric: l01inf_distance(absolute_distance(T=i64)) with d_in = (l0, l1, linf) =
    (max_partitions, max_partitions * max_contribution, max_contribution): a unit
    touches at most max_partitions keys and moves each count by max_contribution.
    Discrete Laplace scale l1 / epsilon on every count; noisy counts below the
    threshold are dropped. The threshold is the smallest integer whose loss (the
    map, corrected as in _threshold_loss) is within (epsilon, delta).
    Privacy loss (epsilon, delta)-DP; delta pays for keys held by few units.
    """
    _selection_sizes(max_partitions, max_contribution)
    epsilon = _positive("epsilon", epsilon)
    if not 0 < _positive("delta", delta) < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta!r}")
    d_in = (int(max_partitions), int(max_partitions) * int(max_contribution), int(max_contribution))
    scale, threshold = _selection(d_in, epsilon, float(delta))
    measurement = dp.m.make_laplace_threshold(*_threshold_space(), scale=scale, threshold=threshold)
    eps, dlt = _threshold_loss(scale, threshold, d_in)
    return PartitionSelection("discrete_laplace_threshold", d_in, eps, dlt, scale, threshold, measurement)


@dataclass(frozen=True, eq=False)
class Quantile:
    """A differentially private alpha-quantile, one of `grid_points` evenly spaced candidates."""

    mechanism: str  # "quantile_score_permute_and_flip"
    alpha: float
    lower: float
    upper: float
    max_contributions: int  # d_in: symmetric distance between neighbouring value lists
    epsilon: float  # OpenDP's map at max_contributions
    scale: float  # scale of the exponential noise on the quantile scores
    grid_step: float  # spacing of the candidates: the resolution of the answer
    _measurement: object
    candidates: int = 0  # how many grid points
    measure: str = "max_divergence"  # or zero_concentrated_divergence: then `epsilon` is rho

    def rank_error(self, tail: float = _CI) -> float:
        """How many ranks (values of the group) the released candidate's score may trail
        the best candidate's, with probability >= 1 - tail. OpenDP scores a candidate c
        by |#below(c) - alpha (n - #equal(c))| in ranks (its integer score divided by
        alpha's denominator, the unit its noise scale is in); permute-and-flip and the
        exponential mechanism both pick a candidate whose score gap exceeds g with
        probability <= candidates * exp(-g / scale) (exponential or Gumbel noise on the
        scores; a union bound over the candidates)."""
        if self.scale == 0 or self.candidates <= 1:
            return 0.0
        return self.scale * math.log(self.candidates / tail)

    def apply(self, values: list[float]) -> float:
        """Values are clamped into [lower, upper] (a 1-stable map); an empty list
        still gets a candidate drawn by the mechanism (all scores tie)."""
        for v in values:
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
                raise ValueError(f"quantile needs finite numbers, not {v!r}")
        return float(self._measurement([min(max(float(v), self.lower), self.upper) for v in values]))


def quantile(alpha: float, lower: float, upper: float, max_contributions: int, epsilon: float,
             *, grid_points: int = 1001, measure: str = "max_divergence") -> Quantile:
    """DP quantile (OpenDP make_private_quantile: make_quantile_score_candidates,
    then make_noisy_max under max_divergence, i.e. permute-and-flip; or, with
    measure="zero_concentrated_divergence", the exponential mechanism (Gumbel noise)
    whose loss is rho-zCDP: `epsilon` is then rho).

    Input domain: vector_domain(atom_domain(T=float, nan=False)), any length, values
    clamped to [lower, upper]; metric: symmetric_distance with d_in =
    max_contributions (a unit adds or removes up to that many values). Candidates:
    `grid_points` evenly spaced points from lower to upper. The scale is set so
    that OpenDP's map at d_in is <= epsilon; privacy loss epsilon-DP (pure).
    """
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {sorted(_MEASURES)}, not {measure!r}")
    if not (isinstance(alpha, Real) and 0 <= alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
    if isinstance(max_contributions, bool) or not isinstance(max_contributions, Integral) or max_contributions < 1:
        raise ValueError(f"max_contributions must be an integer >= 1, not {max_contributions!r}")
    epsilon = _positive("epsilon", epsilon)
    if not all(isinstance(b, Real) and math.isfinite(b) for b in (lower, upper)) or lower > upper:
        raise ValueError(f"bounds must be finite with lower <= upper, not [{lower!r}, {upper!r}]")
    if not isinstance(grid_points, Integral) or grid_points < 2:
        raise ValueError("grid_points must be >= 2")
    lower, upper, d_in = float(lower), float(upper), int(max_contributions)
    points = 1 if lower == upper else int(grid_points)
    step = (upper - lower) / (points - 1) if points > 1 else 0.0
    candidates = [lower + i * step for i in range(points - 1)] + [upper]

    def build(scale: float):
        return dp.m.make_private_quantile(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                                          dp.symmetric_distance(), _MEASURES[measure](),
                                          candidates, float(alpha), scale)

    # the loss is proportional to 1/scale (zCDP: 1/scale^2): read it at scale 1, then calibrate
    at_one = _loss(build(1.0), d_in)[0]
    start = at_one / epsilon if measure == "max_divergence" else math.sqrt(at_one / epsilon)
    measurement, scale = _calibrate(build, d_in, epsilon, start)
    name = "quantile_score_permute_and_flip" if measure == "max_divergence" else "quantile_score_exponential"
    return Quantile(name, float(alpha), lower, upper, d_in, _loss(measurement, d_in)[0], scale, step, measurement,
                    len(candidates), measure)


_MEASURES = {"max_divergence": dp.max_divergence, "zero_concentrated_divergence": dp.zero_concentrated_divergence}



def apply_vector(measurement, integers: bool, values: list) -> list:
    """Run a vector measurement on checked inputs: 64-bit integers (integer noise) or
    finite floats. A huge scale can overflow a float to +-inf; clamping it back is
    post-processing."""
    if integers:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, Integral) or abs(v) > _INT_MAX:
                raise ValueError(f"integer noise needs 64-bit integers, not {v!r}")
        return [int(v) for v in measurement([int(v) for v in values])] if values else []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            raise ValueError(f"float noise needs finite numbers, not {v!r}")
    noisy = measurement([float(v) for v in values]) if values else []
    return [min(max(float(v), -_FLOAT_MAX), _FLOAT_MAX) for v in noisy]
