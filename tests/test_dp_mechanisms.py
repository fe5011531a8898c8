"""gateway.dp.mechanisms, checked by sampling: the privacy inequality on
neighbouring inputs, the reported error against the observed one, and broken
variants that the same checks catch.

OpenDP draws from the OS, so nothing can be seeded; instead every comparison
uses one-sided Chernoff (binomial KL) confidence bounds at level ALPHA = 1e-9:
P[p_true > upper(k, n)] <= ALPHA and P[p_true < lower(k, n)] <= ALPHA for any p.
A privacy check of an event S fails only if lower(P[M(D) in S]) >
e^eps * upper(P[M(D') in S]) + delta, which for a truly (eps, delta)-DP
mechanism needs one of its two bounds to be wrong: probability <= 2 * ALPHA.
The file makes fewer than 1,000 such bounds, so a false failure has probability
below 1e-6 (union bound; the samples need not be independent). The standard
deviation checks allow 6% relative error, about 8 standard errors of a sample
std over 25,000+ Laplace draws (normal approximation, kurtosis 6).
"""

from __future__ import annotations

import collections
import math

import opendp.prelude as dp
import pytest

from gateway.dp import mechanisms as M

ALPHA = 1e-9
_LOG = math.log(1 / ALPHA)


def _kl(q: float, p: float) -> float:
    def term(a: float, b: float) -> float:
        if a == 0:
            return 0.0
        return math.inf if b <= 0 else a * math.log(a / b)

    return term(q, p) + term(1 - q, 1 - p)


def upper(k: int, n: int) -> float:
    """Largest p with n * KL(k/n || p) <= log(1/ALPHA): P[p_true > it] <= ALPHA."""
    q = k / n
    lo, hi = q, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if n * _kl(q, mid) <= _LOG else (lo, mid)
    return hi


def lower(k: int, n: int) -> float:
    return 1.0 - upper(n - k, n)


def violations(a: list, b: list, events: dict, epsilon: float, delta: float = 0.0) -> list[str]:
    """Events S breaking P[a in S] <= e^eps P[b in S] + delta or the same with a, b swapped,
    beyond the confidence bounds."""
    bad = []
    for name, event in events.items():
        ka, kb = sum(map(event, a)), sum(map(event, b))
        for (k1, n1), (k2, n2) in (((ka, len(a)), (kb, len(b))), ((kb, len(b)), (ka, len(a)))):
            if lower(k1, n1) > math.exp(epsilon) * upper(k2, n2) + delta:
                bad.append(f"{name}: {k1}/{n1} vs {k2}/{n2}")
    return bad


def count_events(low: int, high: int) -> dict:
    events = {}
    for v in range(low, high + 1):
        events[f"=={v}"] = lambda x, v=v: x == v
        events[f"<={v}"] = lambda x, v=v: x <= v
    return events


def test_chernoff_bounds_are_sane():
    assert lower(500, 1000) < 0.5 < upper(500, 1000)
    assert upper(0, 1000) < 0.03 and lower(1000, 1000) > 0.97
    assert 0.48 < lower(50_000, 100_000) < 0.5 < upper(50_000, 100_000) < 0.52


# integer counts: discrete Laplace


def test_discrete_laplace_ci95_and_std_formulas_are_exact():
    for scale in (0.3, 1.0, 2.0, 7.5, 40.0):
        a = math.exp(-1 / scale)
        pmf = {x: (1 - a) / (1 + a) * a ** abs(x) for x in range(-4000, 4001)}
        t = M.discrete_laplace_ci95(scale)
        assert t == int(t)
        assert sum(p for x, p in pmf.items() if abs(x) > t) <= 0.05
        assert t == 0 or sum(p for x, p in pmf.items() if abs(x) > t - 1) > 0.05
        std = math.sqrt(sum(p * x * x for x, p in pmf.items()))
        assert M.discrete_laplace_std(scale) == pytest.approx(std, rel=1e-9)


def test_integer_noise_reports_openDP_loss_and_scale():
    m = M.integer_noise(3, 0.1)
    assert m.mechanism == "discrete_laplace"
    assert m.epsilon <= 0.1 and m.epsilon == pytest.approx(0.1)
    assert m.scale == pytest.approx(30.0)
    assert m.apply([]) == []
    out = m.apply([1, 2, 3])
    assert len(out) == 3 and all(type(v) is int for v in out)
    assert M.integer_noise(2, 1.0).apply([2**40]) != [0]  # 64-bit counts fit


N_INT = 30_000


def test_integer_noise_is_dp_on_neighbouring_counts():
    sensitivity, epsilon = 2, 1.0
    m = M.integer_noise(sensitivity, epsilon)
    # each element gets independent noise of the vector's scale: n draws of M([10]) and of M([12])
    a, b = m.apply([10] * N_INT), m.apply([12] * N_INT)
    assert violations(a, b, count_events(2, 20), epsilon) == []

    noise = [x - 10 for x in a]
    t = m.ci95()
    # ci95 is the smallest t with P(|noise| > t) <= 5%: consistent with both sides
    assert lower(sum(abs(x) > t for x in noise), N_INT) <= 0.05
    assert upper(sum(abs(x) > t - 1 for x in noise), N_INT) > 0.05
    std = math.sqrt(sum(x * x for x in noise) / N_INT)
    assert std == pytest.approx(m.std(), rel=0.06)
    assert m.std() == pytest.approx(M.discrete_laplace_std(sensitivity / epsilon))


@pytest.mark.parametrize("factor", [1.5, 10.0])
def test_integer_noise_check_has_power(factor):
    """Noise calibrated to factor * epsilon breaks the check at epsilon."""
    sensitivity, epsilon, n = 2, 1.0, 5_000
    broken = M.integer_noise(sensitivity, epsilon * factor)
    a, b = broken.apply([10] * n), broken.apply([12] * n)
    assert violations(a, b, count_events(2, 20), epsilon) != []


# float sums: Laplace


N_FLOAT = 25_000


def float_events(low: float, high: float, step: float) -> dict:
    events, v = {}, low
    while v <= high:
        events[f"<={v:g}"] = lambda x, v=v: x <= v
        events[f"in[{v:g},{v + step:g})"] = lambda x, v=v: v <= x < v + step
        v += step
    return events


def test_float_noise_is_dp_on_neighbouring_sums():
    sensitivity, epsilon = 1.5, 0.8
    m = M.float_noise(sensitivity, epsilon)
    assert m.mechanism == "laplace" and m.epsilon <= epsilon and m.epsilon == pytest.approx(epsilon)
    assert m.scale == pytest.approx(sensitivity / epsilon)
    a, b = m.apply([3.0] * N_FLOAT), m.apply([4.5] * N_FLOAT)
    assert all(isinstance(x, float) and math.isfinite(x) for x in a + b)
    assert violations(a, b, float_events(-3.0, 10.5, 0.75), epsilon) == []

    noise = [x - 3.0 for x in a]
    # continuous Laplace: P(|noise| > ci95) is exactly 5%
    k = sum(abs(x) > m.ci95() for x in noise)
    assert lower(k, N_FLOAT) <= 0.05 <= upper(k, N_FLOAT)
    assert math.sqrt(sum(x * x for x in noise) / N_FLOAT) == pytest.approx(m.std(), rel=0.06)
    assert m.std() == pytest.approx(math.sqrt(2) * m.scale)


def test_float_noise_check_has_power():
    broken = M.float_noise(1.5, 8.0)
    a, b = broken.apply([3.0] * 3_000), broken.apply([4.5] * 3_000)
    assert violations(a, b, float_events(-3.0, 10.5, 0.75), 0.8) != []


def test_float_noise_edge_values():
    assert M.float_noise(1.0, 1.0).apply([]) == []
    huge = M.float_noise(1e300, 1e-8)  # scale 1e308: draws overflow, and are clamped back
    assert all(math.isfinite(x) for _ in range(20) for x in huge.apply([1.7e308, -1.7e308]))
    exact = M.float_noise(0.0, 1.0)  # bounds [0, 0]: nothing to hide, no noise, no loss
    assert exact.epsilon == 0.0 and exact.ci95() == 0.0 and exact.apply([2.5]) == [2.5]


# partition selection


def absent_or_value(low: int, high: int) -> dict:
    events = {"absent": lambda x: x is None}
    for v in range(low, high + 1):
        events[f"=={v}"] = lambda x, v=v: x == v
        events[f"<={v}"] = lambda x, v=v: x is not None and x <= v
    return events


def test_partition_selection_threshold_is_reported_and_minimal():
    epsilon, delta = 2.0, 0.005
    s = M.partition_selection(1, 1, epsilon, delta)
    assert s.d_in == (1, 1, 1)
    assert s.epsilon <= epsilon and s.delta <= delta and s.scale == pytest.approx(0.5)
    # a key held by one unit (count 1) is released iff 1 + noise >= threshold
    a = math.exp(-1 / s.scale)
    release = a ** (s.threshold - 1) / (1 + a)  # P(noise >= threshold - 1)
    assert release <= s.delta <= delta
    assert a ** (s.threshold - 2) / (1 + a) > delta  # one lower would not do
    assert s.threshold == 4 and s.ci95() == M.discrete_laplace_ci95(0.5)
    several = M.partition_selection(3, 2, 0.9, 1e-6)
    assert several.d_in == (3, 6, 2) and several.epsilon <= 0.9 and several.delta <= 1e-6


N_KEYS = 30_000


def test_partition_selection_key_present_or_absent():
    epsilon, delta = 2.0, 0.005
    s = M.partition_selection(1, 1, epsilon, delta)
    # D holds a key with one unit, D' lacks it (so never releases it): P[released | D] <= delta
    released = s.apply({f"k{i}": 1 for i in range(N_KEYS)})
    assert lower(len(released), N_KEYS) <= delta
    assert all(v >= s.threshold for v in released.values())
    # far above the threshold: released (P[missed] = e^-60 / 2 per key)
    far = s.threshold + int(30 * s.scale) + 30
    assert len(s.apply({f"k{i}": far for i in range(5_000)})) == 5_000
    assert s.apply({}) == {}


def test_partition_selection_is_dp_on_neighbouring_counts():
    epsilon, delta = 2.0, 0.005
    s = M.partition_selection(1, 1, epsilon, delta)
    c = s.threshold - 1  # neighbours around the threshold: count c vs c + 1
    ra, rb = s.apply({f"k{i}": c for i in range(N_KEYS)}), s.apply({f"k{i}": c + 1 for i in range(N_KEYS)})
    a = [ra.get(f"k{i}") for i in range(N_KEYS)]
    b = [rb.get(f"k{i}") for i in range(N_KEYS)]
    assert violations(a, b, absent_or_value(s.threshold, s.threshold + 4), epsilon, delta) == []


def test_openDP_threshold_map_alone_underreports_delta():
    """The off-by-one mechanisms.py corrects (opendp/opendp#2922): the threshold
    OpenDP's own map would accept releases one-unit keys more often than delta."""
    epsilon, delta = 2.0, 0.005
    s = M.partition_selection(1, 1, epsilon, delta)
    space = (dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
             dp.l01inf_distance(dp.absolute_distance(T="i64")))
    naive = dp.m.make_laplace_threshold(*space, scale=s.scale, threshold=s.threshold - 1)
    assert naive.map((1, 1, 1))[1] <= delta  # the map alone accepts it...
    released = naive({f"k{i}": 1 for i in range(N_KEYS)})
    assert lower(len(released), N_KEYS) > delta  # ...but it leaks: the check catches it


# quantile


N_QUANTILE = 3_000


def test_quantile_is_dp_on_neighbouring_datasets():
    epsilon, k = 1.0, 2
    q = M.quantile(0.5, 0.0, 10.0, k, epsilon, grid_points=11)
    assert q.grid_step == 1.0 and q.epsilon <= epsilon and q.epsilon == pytest.approx(epsilon)
    assert q.scale > 0 and q.mechanism
    data = [2.0, 3.0, 4.0, 4.5, 5.0, 6.0]
    neighbour = data + [10.0] * k  # one unit adds max_contributions values
    a = [q.apply(data) for _ in range(N_QUANTILE)]
    b = [q.apply(neighbour) for _ in range(N_QUANTILE)]
    grid = [float(i) for i in range(11)]
    assert set(a) | set(b) <= set(grid)
    events = {f"=={g:g}": (lambda x, g=g: x == g) for g in grid}
    events.update({f"<={g:g}": (lambda x, g=g: x <= g) for g in grid[:-1]})
    assert violations(a, b, events, epsilon) == []
    assert collections.Counter(a).most_common(1)[0][0] in (4.0, 5.0)  # it does track the median


def test_quantile_accuracy_and_empty_input():
    q = M.quantile(0.25, 0.0, 100.0, 1, 1.0)
    assert q.grid_step == pytest.approx(0.1)
    values = [i / 10 for i in range(1001)]  # 0.25-quantile 25
    assert all(abs(q.apply(values) - 25.0) <= 3.0 for _ in range(30))
    shifted = M.quantile(0.5, 5.0, 15.0, 1, 1.0, grid_points=11)
    empty = [shifted.apply([]) for _ in range(200)]  # a random grid point, never 0
    assert set(empty) <= {float(v) for v in range(5, 16)} and len(set(empty)) > 3
    assert M.quantile(0.5, 3.0, 3.0, 1, 1.0).apply([1.0, 7.0]) == 3.0
    assert 0.0 <= q.apply([-50.0, 500.0]) <= 100.0  # clamped into the bounds


# validation


@pytest.mark.parametrize("epsilon", [0, -1.0, math.nan, math.inf, None])
def test_bad_epsilon_is_refused(epsilon):
    for make in (lambda: M.integer_noise(1, epsilon), lambda: M.float_noise(1.0, epsilon),
                 lambda: M.partition_selection(1, 1, epsilon, 1e-6),
                 lambda: M.quantile(0.5, 0.0, 1.0, 1, epsilon)):
        with pytest.raises(ValueError):
            make()


def test_bad_inputs_are_refused():
    f = M.float_noise(1.0, 1.0)
    for bad in (math.nan, math.inf, -math.inf, None, "1"):
        with pytest.raises(ValueError):
            f.apply([1.0, bad])
    with pytest.raises(ValueError):
        M.integer_noise(1, 1.0).apply([1, 2.5])
    with pytest.raises(ValueError):
        M.integer_noise(1, 1.0).apply([2**70])
    with pytest.raises(ValueError):
        M.quantile(0.5, 0.0, 1.0, 1, 1.0).apply([0.5, math.nan])
    for sensitivity in (-1, math.nan, math.inf):
        with pytest.raises(ValueError):
            M.float_noise(sensitivity, 1.0)
    with pytest.raises(ValueError):
        M.integer_noise(1.5, 1.0)
    for delta in (0, 1, -0.1, math.nan):
        with pytest.raises(ValueError):
            M.partition_selection(1, 1, 1.0, delta)
    with pytest.raises(ValueError):
        M.partition_selection(0, 1, 1.0, 1e-6)
    with pytest.raises(ValueError):
        M.partition_selection(1, 1, 1.0, 1e-6).apply({"a": 1.5})
    for alpha, lo, hi in ((1.5, 0.0, 1.0), (-0.1, 0.0, 1.0), (0.5, 2.0, 1.0), (0.5, 0.0, math.inf)):
        with pytest.raises(ValueError):
            M.quantile(alpha, lo, hi, 1, 1.0)
    with pytest.raises(ValueError):
        M.quantile(0.5, 0.0, 1.0, 0, 1.0)
