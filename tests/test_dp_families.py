"""The aggregate families (gateway/dp/families/), checked statistically: each
released value's 95% interval covers its noise-free value at least 93% of the
time over 200+ repetitions on data where no contribution bound clips, for pure
and zCDP accounting; released counts are non-negative integers, sums and
averages stay within what the declared bounds allow; the composition of a
query's measurements adds up as OpenDP's does; and what the analyst is told
names their columns and aggregates, agrees with the rows returned, and never
shows an internal name.

OpenDP draws from the operating system, so nothing can be seeded. The coverage
checks of additive noise pool at least 2,000 intervals: at a true
coverage of 95% (or more: the average's interval is conservative), falling
below 93% is more than four standard errors away. The quantile's
rank interval is a union bound over 1,001 candidates, so its true coverage is
far above 95%, and 600 draws suffice.
"""

from __future__ import annotations

import json
import math
import statistics

import duckdb
import opendp.prelude as dp
import pytest

from gateway.dp import noising
from gateway.dp.composition import Composition, PrivacyLoss
from gateway.dp.families import AGGREGATES, QUANTITIES, Contribution
from gateway.dp.families.averages import ratio_interval
from gateway.dp.families.base import additive_interval
from gateway.dp.plan import Kind, Output, Quantity
from gateway.engine import QueryRequest
from gateway.errors import Refused
from gateway.policy.model import Bounds
from tests.roomkit import build_engine, private_table, simple_policy

REPETITIONS = 200
ACCOUNTINGS = {"pure": 0.5, "zcdp": 0.5 ** 2 / 2}  # a loss of the same nominal strength (rho = eps^2 / 2)
SPREAD = Contribution(rows_per_unit=3, groups_per_unit=2)


def covered(pairs) -> float:
    """Share of (interval, truth) pairs whose interval holds the truth."""
    pairs = list(pairs)
    return sum(low <= truth <= high for (low, high), truth in pairs) / len(pairs)


def loss(accounting: str, share: float = 1.0) -> PrivacyLoss:
    return PrivacyLoss(accounting, ACCOUNTINGS[accounting] * share)


# -- composition ---------------------------------------------------------------------------------------


def test_the_split_adds_up_and_delta_goes_to_the_selection_only():
    total = PrivacyLoss("pure", 0.1, 1e-7)
    split = Composition.split(total, [("__units", "units"), ("__q0", "rows"), ("__q1", "sum"), ("__clipped", "c")],
                              reserved={"__clipped": 0.25}, delta_to="__units")
    shares = {p.name: p.loss for p in split.parts}
    assert shares["__clipped"].amount == pytest.approx(0.025)
    assert [shares[n].amount for n in ("__units", "__q0", "__q1")] == [pytest.approx(0.025)] * 3
    assert shares["__units"].delta == 1e-7 and shares["__q0"].delta == 0 and split.output_measure == "max_divergence"
    assert sum(p.loss.amount for p in split.parts) == pytest.approx(0.1)
    composed = split.check({n: PrivacyLoss("pure", s.amount * 0.999, s.delta) for n, s in shares.items()})
    assert composed.amount <= 0.1 and composed.delta == 1e-7
    with pytest.raises(ValueError, match="more than its share"):  # a part spending beyond its share
        split.check({**{n: s for n, s in shares.items()}, "__q1": PrivacyLoss("pure", 0.03)})
    with pytest.raises(ValueError):
        Composition.split(total, [("__units", "units")], reserved={"__units": 1.0})
    with pytest.raises(ValueError):  # losses measured differently do not compose
        PrivacyLoss("pure", 0.1).plus(PrivacyLoss("zcdp", 0.1))


@pytest.mark.parametrize("measure, scales", [("max_divergence", (2.0, 5.0)), ("zero_concentrated_divergence", (2.0, 5.0))])
def test_basic_composition_is_what_openDP_composes(measure, scales):
    """Composition.total, the sum of the parts, is OpenDP's make_composition map."""
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
    if measure == "max_divergence":
        parts = [dp.m.make_laplace(*space, scale=s) for s in scales]
    else:
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
        parts = [dp.m.make_gaussian(*space, scale=s) for s in scales]
    composed = dp.c.make_composition(parts)
    accounting = "pure" if measure == "max_divergence" else "zcdp"
    ours = PrivacyLoss(accounting, 0.0)
    for part in parts:
        ours = ours.plus(PrivacyLoss(accounting, part.map(1.0)))
    assert ours.amount == pytest.approx(composed.map(1.0), rel=1e-12)


# -- Gaussian noise (zcdp) ------------------------------------------------------------------------------


def test_discrete_gaussian_interval_is_exact_and_openDP_draws_agree():
    from gateway.dp import gaussian

    for sigma in (0.4, 1.0, 3.7, 25.0, 400.0):
        weights = {x: math.exp(-x * x / (2 * sigma * sigma)) for x in range(-int(60 * sigma) - 5, int(60 * sigma) + 6)}
        total = sum(weights.values())
        t = gaussian.discrete_gaussian_ci(sigma, 0.05)
        assert t == int(t) and sum(w for x, w in weights.items() if abs(x) > t) / total <= 0.05
        assert t == 0 or sum(w for x, w in weights.items() if abs(x) > t - 1) / total > 0.05
        std = math.sqrt(sum(x * x * w for x, w in weights.items()) / total)
        assert gaussian.discrete_gaussian_std(sigma) == pytest.approx(std, rel=1e-9)
    # beyond 2,000 the normal tail with a continuity correction: continuous with the exact sum at the seam
    assert abs(gaussian.discrete_gaussian_ci(2_000.0, 0.05) - gaussian.discrete_gaussian_ci(2_000.001, 0.05)) <= 1
    noise = gaussian.integer_noise(2.0, 0.02)
    assert noise.rho <= 0.02 and noise.rho == pytest.approx(0.02) and noise.scale == pytest.approx(10.0)
    weights = {x: math.exp(-x * x / 200) for x in range(-500, 501)}
    beyond = sum(w for x, w in weights.items() if abs(x) > noise.ci95()) / sum(weights.values())  # 3.9%: discrete
    draws = [v - 100 for v in noise.apply([100] * 20_000)]
    assert abs(sum(abs(v) > noise.ci95() for v in draws) / len(draws) - beyond) < 0.01  # 7 standard errors
    floats = gaussian.float_noise(3.0, 0.5)
    assert floats.ci95() == pytest.approx(1.959964 * floats.scale, rel=1e-6) and floats.scale == pytest.approx(3.0)
    assert gaussian.float_noise(0.0, 0.5).apply([2.5]) == [2.5]
    with pytest.raises(ValueError):
        gaussian.integer_noise(1.0, 0.0)


# -- each family, on its own ------------------------------------------------------------------------------


def released(aggregate: str, output: Output, measurements: dict, truths: dict) -> list:
    noisy = {name: QUANTITIES[kinds[name]].noise(measurements[name], truths[name]) for name in output.quantities}
    return AGGREGATES[aggregate].release(output, noisy, measurements)


kinds = {"__units": Kind.UNITS, "__q0": Kind.ROWS, "__q1": Kind.SUM, "__q2": Kind.CENTERED_SUM, "__q3": Kind.QUANTILE}
TRUE_COUNTS = [0, 1, 3, 10, 40, 150, 600, 2_500, 10_000, 50_000] * 2


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
@pytest.mark.parametrize("kind, aggregate", [(Kind.UNITS, "count_distinct"), (Kind.ROWS, "count")])
def test_counts_cover_their_truth_and_are_non_negative_integers(accounting, kind, aggregate):
    name = "__units" if kind is Kind.UNITS else "__q0"
    quantity = Quantity(name, kind, None, None, None, 0.0)
    measurement = QUANTITIES[kind].measurement(quantity, SPREAD, loss(accounting))
    assert measurement.epsilon <= ACCOUNTINGS[accounting]
    output = Output("__a0", aggregate, (name,))
    pairs, negative_raw = [], 0
    for _ in range(REPETITIONS):
        raw = measurement.apply(TRUE_COUNTS)
        negative_raw += sum(v < 0 for v in raw)
        values = AGGREGATES[aggregate].release(output, {name: raw}, {name: measurement})
        assert all(type(v.value) is int and v.value >= 0 and 0 <= v.low <= v.value <= v.high for v in values)
        pairs += [((v.low, v.high), t) for v, t in zip(values, TRUE_COUNTS)]
    assert negative_raw > 0  # the noise did push some counts below zero: clamping was exercised
    assert covered(pairs) >= 0.93


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
def test_sums_cover_their_truth_and_a_sum_of_non_negative_values_is_never_negative(accounting):
    bounds = Bounds(0.0, 500.0)
    quantity = Quantity("__q1", Kind.SUM, "__v0", bounds, None, 0.0)
    measurement = QUANTITIES[Kind.SUM].measurement(quantity, SPREAD, loss(accounting))
    output = Output("__a0", "sum", ("__q1",), bounds)
    truths = [0.0, 12.5, 400.0, 9_000.0, 250_000.0, 3.8e6] * 4
    pairs = []
    for _ in range(REPETITIONS):
        values = AGGREGATES["sum"].release(output, {"__q1": measurement.apply(truths)}, {"__q1": measurement})
        assert all(v.value >= 0 and 0 <= v.low <= v.value <= v.high for v in values)
        pairs += [((v.low, v.high), t) for v, t in zip(values, truths)]
    assert covered(pairs) >= 0.93
    # a measure bounded to [-20, 0] sums to at most 0
    negative = Output("__a0", "sum", ("__q1",), Bounds(-20.0, 0.0))
    assert all(v.value <= 0 and v.high <= 0 for v in
               AGGREGATES["sum"].release(negative, {"__q1": [5.0, -3.0, 1e9]}, {"__q1": measurement}))


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
def test_an_average_of_a_rate_gets_its_own_interval_within_zero_and_one(accounting):
    """AVG = midpoint + noisy centred sum / noisy count: its interval is the ratio's,
    not the sum's; on a rate it stays within [0, 1] and narrows as the count grows."""
    bounds = Bounds(0.0, 1.0)
    centred = Quantity("__q2", Kind.CENTERED_SUM, "__v0", bounds, None, 0.0)
    count = Quantity("__q0", Kind.ROWS, "__v0", None, None, 0.0)
    half = loss(accounting, 0.5)
    measurements = {"__q2": QUANTITIES[Kind.CENTERED_SUM].measurement(centred, SPREAD, half),
                    "__q0": QUANTITIES[Kind.ROWS].measurement(count, SPREAD, half)}
    output = Output("__a0", "avg", ("__q2", "__q0"), bounds)
    sizes, rates = [200, 1_000, 5_000, 20_000, 100_000], [0.02, 0.3, 0.5, 0.81, 0.97]
    counts = [n for n in sizes for _ in rates]
    averages = [r for _ in sizes for r in rates]
    truths = {"__q0": counts, "__q2": [n * (r - 0.5) for n, r in zip(counts, averages)]}
    pairs, widths = [], {n: [] for n in sizes}
    for _ in range(REPETITIONS):
        values = released("avg", output, measurements, truths)
        for v, n, truth in zip(values, counts, averages):
            if v.value is None:
                continue  # a noisy count <= 0: NULL, no interval to cover anything
            assert 0 <= v.low <= v.value <= v.high <= 1
            pairs.append(((v.low, v.high), truth))
            widths[n].append(v.high - v.low)
    assert len(pairs) >= 0.99 * REPETITIONS * len(counts)
    assert covered(pairs) >= 0.93
    medians = [statistics.median(widths[n]) for n in sizes]
    assert medians == sorted(medians, reverse=True) and medians[-1] < 0.01
    # the old defect: the sum's ±(tens) on a rate; here the interval is on the rate's own scale
    assert AGGREGATES["avg"].interval(output, measurements)["at_count"]["100000"] < 0.01


def test_the_ratio_interval_is_the_box_of_both_noises_clamped():
    # S = 50 centred, N = 100, h_s = 10, h_n = 20 on [0, 1]: corners 0.5 + (50 +- 10) / (100 +- 20)
    interval = ratio_interval(50.0, 100.0, 10.0, 20.0, 0.0, 1.0)
    assert interval.value == 1.0  # 0.5 + 0.5, at the bound
    assert interval.low == pytest.approx(0.5 + 40 / 120) and interval.high == 1.0
    assert ratio_interval(3.0, 5.0, 10.0, 20.0, 0.0, 1.0).low == 0.0  # a count within its noise: everything
    assert ratio_interval(3.0, 0.0, 10.0, 20.0, 0.0, 1.0).value is None
    clamped = additive_interval(-7.0, 5.0, 0.0, math.inf, integer=True)
    assert (clamped.value, clamped.low, clamped.high) == (0, 0, 0)


def score(values: list[float], candidate: float, alpha: float) -> float:
    """OpenDP's quantile score, in ranks: |#below - alpha (n - #equal)|."""
    below = sum(v < candidate for v in values)
    equal = sum(v == candidate for v in values)
    return abs(below - alpha * (len(values) - equal))


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_a_quantile_is_within_its_rank_interval(accounting, alpha):
    """At most rank_error of the group's values lie between the released candidate
    and the best one (the true quantile, up to the grid's step)."""
    bounds = Bounds(0.0, 100.0)
    quantity = Quantity("__q3", Kind.QUANTILE, "__v0", bounds, alpha, 0.0)
    measurement = QUANTITIES[Kind.QUANTILE].measurement(quantity, SPREAD, loss(accounting, 4.0))
    interval = AGGREGATES["median"].interval(Output("__a0", "median", ("__q3",), bounds), {"__q3": measurement})
    assert interval["kind"] == "rank" and interval["ranks"] == pytest.approx(measurement.rank_error(0.05))
    grid = [i * measurement.grid_step for i in range(measurement.candidates)]
    groups = [[(i * 37 % 1000) / 10 for i in range(n)] for n in (200, 500, 1_500)]
    best = [min(score(g, c, alpha) for c in grid) for g in groups]
    hits = total = 0
    for _ in range(REPETITIONS):
        values = QUANTITIES[Kind.QUANTILE].noise(measurement, groups)
        for value, group, floor in zip(values, groups, best):
            assert 0 <= value <= 100
            hits += score(group, value, alpha) <= floor + interval["ranks"]
            total += 1
    assert total == 3 * REPETITIONS and hits / total >= 0.93
    true = statistics.quantiles(groups[-1], n=100, method="inclusive")[int(alpha * 100) - 1]
    assert abs(statistics.median(QUANTITIES[Kind.QUANTILE].noise(measurement, [groups[-1]] * 25)) - true) < 5


# -- through the engine, on data where no bound clips ------------------------------------------------------

REGIONS = ["north", "south", "east", "west", "central", "coast", "mountain", "lakes", "plains", "valley", "forest",
           "islands"]
COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": REGIONS},
    "day": {"role": "dimension"},
    "spend": {"role": "measure", "bounds": [0, 500]},
    "converted": {"role": "measure", "bounds": [0, 1]},
}
# 6,600 households, one row each: no unit has more than max_rows_per_unit rows in a group or
# more than max_groups_per_unit groups, and every value is within its bounds. islands is empty.
ROWS = ["CREATE TABLE visits AS SELECT 'h' || i AS hh, "
        f"{REGIONS[:11]}[1 + (i * 7) % 11] AS region, 'd' || (i % 3) AS day, "
        "(i * 13) % 500 AS spend, CASE WHEN i % 10 < 3 THEN 1 ELSE 0 END AS converted FROM range(6600) t(i)"]
SQL = ("SELECT region, count(*) AS n, count(DISTINCT hh) AS households, sum(spend) AS total, "
       "avg(spend) AS basket, avg(converted) AS rate FROM visits GROUP BY region")


def make_engine(tmp_path, accounting="pure", epsilon=1.0, **privacy):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)},
                           aggregates=("count", "count_distinct", "sum", "avg", "median"), k=5)
    policy["privacy"] = {"epsilon_per_query": epsilon, "delta_per_query": 1e-6, "max_rows_per_unit": 2,
                         "max_groups_per_unit": 1, "accounting": accounting,
                         "budget": {"epsilon": 10_000, "delta": 0.01}, **privacy}
    return build_engine(tmp_path, policy, ROWS)


def request(sql: str) -> QueryRequest:
    return QueryRequest(user="ana", cleanroom="room", sql=sql)


def truth(tmp_path) -> dict:
    with duckdb.connect(str(tmp_path / "data" / "room.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT region, count(*), count(DISTINCT hh), sum(spend), avg(spend), avg(converted) "
                           "FROM visits GROUP BY region").fetchall()
    found = {r[0]: dict(zip(("n", "households", "total", "basket", "rate"), r[1:])) for r in rows}
    found["islands"] = {"n": 0, "households": 0, "total": 0.0, "basket": None, "rate": None}
    return found


# An owner's profile of these rows (gateway/dp/bound_choice.py): every household has one row and
# values reach the upper bound, so the bounds chosen from it (C = 1, spend's upper 500) clip nothing.
PROFILE = {"max_contributions_per_unit": 2, "profile": {"visits": {
    "units_by_rows": [6600, 0, 0],
    "measures": {"spend": {"edges": [0, 250, 500], "counts": [3300, 3300, 100_000]},
                 "converted": {"edges": [0, 0.5, 1], "counts": [4600, 0, 2000]}}}}}


@pytest.mark.slow
@pytest.mark.parametrize("accounting, chosen", [("pure", False), ("zcdp", False), ("pure", True)])
def test_released_intervals_cover_the_truth_through_the_engine(tmp_path, accounting, chosen):
    """The release path itself (measure, then publish with the analyst's SQL) repeated
    200 times on the bounded table the engine computed: every column's per-row
    interval covers the true value >= 93% of the time; counts are non-negative
    integers, sums non-negative, averages within their bounds. Also with bounds
    chosen per query from a profile (the noise then calibrated to the chosen C = 1)."""
    engine = make_engine(tmp_path, accounting, **(PROFILE if chosen else {}))
    state = engine.compile(request(SQL))
    if chosen:
        assert state.noise_plan.bound_choice.total == 1 and not state.noise_plan.bound_choice.uppers
    bounded = engine.database.cursor().sql(state.generated_sql).to_arrow_table()
    truths = truth(tmp_path)
    pairs = {column: [] for column in ("n", "households", "total", "basket", "rate")}
    for _ in range(REPETITIONS):
        release = noising.publish(state.noise_plan, noising.measure(state.noise_plan, bounded, "hh"))
        rows = release.table.to_pylist()
        for column in pairs:
            intervals = release.protection["columns"][column]["intervals"]
            assert len(intervals) == len(rows)
            for row, (low, high) in zip(rows, intervals):
                value, true = row[column], truths[row["region"]][column]
                if column in ("n", "households"):
                    assert type(value) is int and value >= 0
                elif column == "total":
                    assert value >= 0
                elif value is not None:
                    assert (0 <= value <= 500) if column == "basket" else (0 <= value <= 1)
                    assert low <= value <= high
                if true is not None and value is not None:
                    pairs[column].append(((low, high), true))
    for column, found in pairs.items():
        assert len(found) >= 10 * REPETITIONS, column  # 11 regions hold 600 households each
        assert covered(found) >= 0.93, (column, covered(found))
    # the rate's interval is on its own scale: well inside [0, 1] for 600 households a region
    assert statistics.median(high - low for (low, high), _ in pairs["rate"]) < 0.5


def test_what_the_analyst_is_told_agrees_with_the_rows_and_hides_internal_names(tmp_path):
    engine = make_engine(tmp_path, epsilon=5.0)
    sql = ("SELECT region, count(*) AS n, count(*) AS again, avg(converted) AS rate, count(*) * 2 AS twice "
           "FROM visits GROUP BY region HAVING count(*) > 300 ORDER BY n DESC LIMIT 3")
    release = engine.run(request(sql))
    rows = release.table.to_pylist()
    protection, notices = release.protection, release.notices
    text = json.dumps(protection) + "\n".join(notices)
    assert "__" not in text  # no __a0, __q1, __units, __g0 anywhere
    assert len(rows) == 3 and protection["groups"]["returned"] == 3
    assert protection["groups"]["released"] >= 11  # eleven regions hold 600 each; islands none
    assert any(f"{protection['groups']['released']} released" in n and "3 row(s) returned" in n for n in notices)
    # count(*) is one measurement, shown twice and used in HAVING and an expression: described once
    counts = [a for a in protection["aggregates"] if a["sql"] == "count(*)"]
    assert len(counts) == 1 and counts[0]["columns"] == ["n", "again"]
    assert len(notices) == len(set(notices))
    assert sum("count(*)" in n and "column n, again" in n for n in notices) == 1
    # per-row intervals follow the returned rows (ORDER BY n DESC LIMIT 3), each around its own value
    half = counts[0]["interval"]["half_width"]
    for row, (low, high) in zip(rows, protection["columns"]["n"]["intervals"]):
        assert (low, high) == (max(0, row["n"] - half), row["n"] + half)
    for row, (low, high) in zip(rows, protection["columns"]["rate"]["intervals"]):
        assert 0 <= low <= row["rate"] <= high <= 1
    assert "twice" not in protection["columns"]  # an expression of a noisy value has no interval of its own
    again = engine.run(request(sql.replace("LIMIT 3", "LIMIT 2")))  # the release cache's answer, post-processed anew
    assert again.protection["reused"] and "__" not in json.dumps(again.protection) + "".join(again.notices)
    assert again.protection["columns"]["n"]["intervals"] == protection["columns"]["n"]["intervals"][:2]
    # the bounds that can bias the values are named; the noise-only coverage is said
    assert any(n.startswith("intervals cover the noise only") and "max_rows_per_unit 2" in n for n in notices)
    assert {b["bound"] for b in protection["bias"]} == {"max_rows_per_unit", "max_groups_per_unit", "bounds"}


def test_a_private_selection_that_releases_nothing_says_so_without_contradiction(tmp_path):
    engine = make_engine(tmp_path, epsilon=0.02)  # a threshold of ~1,400 households, ~200 a day in north
    release = engine.run(request("SELECT day, count(*) FROM visits WHERE region = 'north' GROUP BY day"))
    assert release.table.num_rows == 0
    groups = [n for n in release.notices if n.startswith("groups were selected privately")]
    assert len(groups) == 1 and "0 released" in groups[0] and "neither shown nor counted" in groups[0]
    assert not any("suppressed" in n for n in release.notices)


def test_quantiles_are_named_as_written_and_exact_without_noise(tmp_path):
    engine = make_engine(tmp_path, epsilon=8.0)
    sql = ("SELECT median(spend) AS m, percentile_cont(0.9) WITHIN GROUP (ORDER BY spend) AS pc, "
           "percentile_disc(0.9) WITHIN GROUP (ORDER BY spend) AS pd, quantile_cont(spend, 0.25) AS qc, "
           "quantile_disc(spend, 0.25) AS qd FROM visits")
    release = engine.run(request(sql))
    names = {c: protection["aggregate"] for c, protection in release.protection["columns"].items()}
    assert names == {"m": "median", "pc": "percentile_cont", "pd": "percentile_disc", "qc": "quantile_cont",
                     "qd": "quantile_disc"}
    labels = [a["sql"] for a in release.protection["aggregates"]]
    assert labels == ["median(spend)", "percentile_cont(0.9) WITHIN GROUP (ORDER BY spend)",
                      "percentile_disc(0.9) WITHIN GROUP (ORDER BY spend)", "quantile_cont(spend, 0.25)",
                      "quantile_disc(spend, 0.25)"]
    row = release.table.to_pylist()[0]
    assert all(0 <= v <= 500 for v in row.values())
    assert abs(row["pc"] - 450) < 25 and abs(row["qd"] - 125) < 25  # spend is uniform on 0..499
    assert all(a["interval"]["kind"] == "rank" for a in release.protection["aggregates"])
    with pytest.raises(Refused) as refused:  # DESC would silently be the other quantile
        engine.run(request("SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY spend DESC) FROM visits"))
    assert refused.value.rule == "aggregate.quantile"
    with pytest.raises(Refused):
        engine.run(request("SELECT quantile_cont(spend, 2) FROM visits"))
    with pytest.raises(Refused) as refused:  # any other function the parser does not know stays refused
        engine.run(request("SELECT region, no_such_function(spend) FROM visits GROUP BY region"))
    assert refused.value.rule == "function.not_allowed"


def test_without_differential_privacy_percentile_disc_is_a_value_of_the_group(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "median"), k=5)
    engine = build_engine(tmp_path, policy, ROWS)
    row = engine.run(request("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY spend) AS d, "
                             "percentile_cont(0.5) WITHIN GROUP (ORDER BY spend) AS c, "
                             "quantile_disc(spend, 0.5) AS qd FROM visits")).table.to_pylist()[0]
    with duckdb.connect() as con:
        con.execute(ROWS[0])
        expected = con.execute("SELECT quantile_disc(spend, 0.5), quantile_cont(spend, 0.5) FROM visits").fetchone()
    assert (row["d"], row["c"], row["qd"]) == (expected[0], expected[1], expected[0])


@pytest.mark.parametrize("sql", [
    "SELECT percentile_cont(1.0) WITHIN GROUP (ORDER BY spend) FROM visits",
    "SELECT percentile_disc(0.0) WITHIN GROUP (ORDER BY spend) FROM visits",
    "SELECT percentile_disc(1) WITHIN GROUP (ORDER BY spend) FROM visits",
    "SELECT quantile_disc(spend, 0.2) FROM visits",  # 1/k: the smallest value of a group of exactly k rows
    "SELECT region, QUANTILE_CONT(spend, 0.99) FROM visits GROUP BY region",
    "SELECT count(*) FROM visits HAVING percentile_disc(0.01) WITHIN GROUP (ORDER BY spend) > 3",
    "SELECT region FROM visits GROUP BY region ORDER BY quantile_disc(spend, 0.999)",
])
def test_without_differential_privacy_the_median_permission_gives_no_extreme_value(tmp_path, sql):
    """percentile_disc(0) is MIN: under k alone, a median permission admits quantiles
    from the second value in from either end of a group of k rows (2/k .. 1 - 2/k)."""
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "median"), k=5)
    engine = build_engine(tmp_path, policy, ROWS)
    with pytest.raises(Refused) as refused:
        engine.run(request(sql))
    assert refused.value.rule == "aggregate.quantile_extreme"
    assert "0.4" in refused.value.hint and "0.6" in refused.value.hint


@pytest.mark.parametrize("sql, written", [
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY spend) FROM visits", "percentile_cont"),
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY spend) FROM visits", "percentile_disc"),
    ("SELECT quantile_cont(spend, 0.5) FROM visits", "quantile_cont"),
])
def test_a_quantile_without_its_permission_is_refused_by_the_name_the_analyst_wrote(tmp_path, sql, written):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count",), k=5)
    engine = build_engine(tmp_path, policy, ROWS)
    with pytest.raises(Refused) as refused:
        engine.run(request(sql))
    assert refused.value.rule == "aggregate.not_allowed"
    assert refused.value.message.startswith(f"{written} (the median permission) is not allowed")


def test_without_differential_privacy_extreme_quantiles_follow_min_and_max_permissions(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "median", "min"), k=5)
    engine = build_engine(tmp_path, policy, ROWS)
    low = engine.run(request("SELECT percentile_disc(0.0) WITHIN GROUP (ORDER BY spend) AS low FROM visits"))
    with duckdb.connect() as con:
        con.execute(ROWS[0])
        assert low.table.column("low").to_pylist() == [con.execute("SELECT min(spend) FROM visits").fetchone()[0]]
    engine.run(request("SELECT quantile_cont(spend, 0.4), quantile_cont(spend, 0.6), median(spend) FROM visits"))
    with pytest.raises(Refused) as refused:
        engine.run(request("SELECT percentile_cont(1.0) WITHIN GROUP (ORDER BY spend) FROM visits"))
    assert refused.value.rule == "aggregate.quantile_extreme" and "MAX" in refused.value.hint


def test_a_declared_share_counts_clipped_units_per_released_group(tmp_path):
    """report_clipping: a noisy count, per group, of the households over max_rows_per_unit,
    paid from the query's own epsilon (the query costs what it did)."""
    extra = ["INSERT INTO visits SELECT 'big' || i, 'north', 'd0', 10, 0 FROM range(400) t(i), range(5) r(j)"]
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "sum"), k=5)
    policy["privacy"] = {"epsilon_per_query": 4.0, "max_rows_per_unit": 2, "max_groups_per_unit": 1,
                         "report_clipping": 0.25, "budget": {"epsilon": 100}}
    engine = build_engine(tmp_path, policy, ROWS + extra)
    release = engine.run(request("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region"))
    clipped = dict(zip(release.table.column("region").to_pylist(), release.protection["clipped_units"]["by_row"]))
    assert abs(clipped["north"] - 400) < 30 and abs(clipped["south"]) < 30
    assert release.protection["spent"]["epsilon"] == 4.0
    assert release.protection["composition"]["epsilon"] == 4.0
    assert any(n.startswith("clipping:") for n in release.notices)
    shares = {q.kind: q.share for q in engine.compile(request("SELECT count(*) FROM visits")).noise_plan.quantities}
    assert shares[Kind.CLIPPED_UNITS] == pytest.approx(1.0) and shares[Kind.UNITS] == pytest.approx(1.5)


def test_explain_shows_each_interval_before_anything_runs(tmp_path):
    engine = make_engine(tmp_path, accounting="zcdp")
    explained = engine.explain(request(SQL))
    dp_ = explained["differential_privacy"]
    assert "__" not in json.dumps(explained)
    assert dp_["accounting"] == "zcdp" and dp_["composition"]["output_measure"] == "zero_concentrated_divergence"
    by_column = {tuple(a["columns"]): a for a in dp_["aggregates"]}
    assert by_column[("rate",)]["interval"]["kind"] == "ratio"
    assert by_column[("n",)]["noise"][0]["mechanism"] == "discrete_gaussian"
    assert by_column[("total",)]["interval"]["clamped_to"] == [0.0, None]
    assert sum(n["rho"] for a in dp_["aggregates"] for n in a["noise"]) == pytest.approx(dp_["rho"], rel=1e-9)
    assert dp_["rho"] == pytest.approx(1.0 ** 2 / 2)
    from gateway.pgwire.privacy import plan_table

    lines = plan_table(explained, "text").column(0).to_pylist()
    assert any(line.startswith("rate: avg(converted): 95% interval (noise only) per row") for line in lines)
    assert any(line.startswith("intervals cover the noise only") for line in lines)


@pytest.mark.parametrize("accounting, mechanism", [("pure", "discrete_laplace_threshold"),
                                                   ("zcdp", "discrete_gaussian_threshold")])
def test_privately_selected_groups_carry_their_counts_intervals(tmp_path, accounting, mechanism):
    """The unit counts that selected the groups are the released ones: their interval
    comes from the selection's own noise (a count near the threshold tends to be high:
    it was released because its noise was)."""
    engine = make_engine(tmp_path, accounting, epsilon=2.0)
    release = engine.run(request("SELECT day, count(DISTINCT hh) AS households, avg(converted) AS rate "
                                 "FROM visits GROUP BY day ORDER BY day"))
    rows = release.table.to_pylist()
    assert [r["day"] for r in rows] == ["d0", "d1", "d2"]  # 2,200 households a day, far above the threshold
    (households,) = [a for a in release.protection["aggregates"] if a["columns"] == ["households"]]
    assert households["noise"][0]["mechanism"] == mechanism and "threshold" in households["noise"][0]
    for row, (low, high), (rate_low, rate_high) in zip(rows, release.protection["columns"]["households"]["intervals"],
                                                       release.protection["columns"]["rate"]["intervals"]):
        assert low <= row["households"] <= high and high - low == 2 * households["interval"]["half_width"]
        assert 0 <= rate_low <= row["rate"] <= rate_high <= 1
