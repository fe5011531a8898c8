"""Contribution bounds chosen per query from the owner's DP profile (gateway/dp/bound_choice.py):
the choice itself (never above the declared ceiling, deterministic, sensible as epsilon and
group sizes move), the policy's `privacy.profile` checks, and, end to end, that the bound a
query runs with is the one its noise is calibrated to and comes from the policy, not the data."""

from __future__ import annotations

import random

import pytest
import yaml

from gateway.dp.bound_choice import Demand, Histogram, Setting, choose, expected_error, rows_beyond
from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy
from tests.dpkit import request
from tests.roomkit import build_engine, private_table, simple_policy

CEILING = 50


def setting(groups=12, pure=True, ceiling=CEILING, rows_per_unit=50, groups_per_unit=20) -> Setting:
    return Setting(ceiling=ceiling, rows_per_unit=rows_per_unit, groups_per_unit=min(groups_per_unit, groups),
                   groups=groups, pure=pure)


def geometric_profile(units=200_000, mean=5.0, top=CEILING) -> tuple[int, ...]:
    """Units by rows, geometric with this mean, bins 1..top and one above."""
    p = 1 / mean
    bins = [round(units * p * (1 - p) ** (n - 1)) for n in range(1, top + 1)]
    return tuple(bins + [round(units * (1 - p) ** top)])


def count_choice(epsilon, profile=None, groups=12, **kw):
    return choose("t", profile or geometric_profile(), {}, {}, [Demand("rows", rows_loss=epsilon)],
                  setting(groups=groups, **kw)).total


AMOUNTS = Histogram(tuple(range(0, 501, 50)), (400_000, 300_000, 150_000, 80_000, 40_000, 15_000, 6_000, 2_000,
                                               800, 200, 0))


# -- the choice, as a pure function -----------------------------------------------------------


def test_never_above_the_ceiling_nor_below_one():
    rng = random.Random(7)
    for _ in range(60):
        ceiling = rng.randint(1, 60)
        profile = tuple(rng.randint(0, 1000) for _ in range(ceiling + 1 + rng.randint(0, 5)))
        epsilon = 10 ** rng.uniform(-3, 2)
        choice = choose("t", profile, {"x": AMOUNTS}, {"x": (0.0, 500.0)},
                        [Demand("rows", rows_loss=epsilon), Demand("sum", sum_loss=epsilon, measure="x"),
                         Demand("ratio", rows_loss=epsilon / 2, sum_loss=epsilon / 2, measure="x")],
                        setting(groups=rng.randint(1, 60), ceiling=ceiling, pure=rng.random() < 0.5))
        assert 1 <= choice.total <= ceiling
        for chosen, declared in choice.uppers.values():
            assert 0 < chosen < declared == 500.0


def test_deterministic_given_the_policy_and_the_loss():
    args = ("t", geometric_profile(), {"x": AMOUNTS}, {"x": (0.0, 500.0)},
            [Demand("sum", sum_loss=0.5, measure="x"), Demand("rows", rows_loss=0.5)], setting())
    first = choose(*args)
    assert all(choose(*args) == first for _ in range(4))


def test_more_epsilon_never_chooses_a_smaller_bound():
    chosen = [count_choice(epsilon) for epsilon in (0.001, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 100)]
    assert chosen == sorted(chosen)
    assert chosen[0] < chosen[-1]  # and the choice moves: noise matters at 0.001, bias at 100


def test_smaller_groups_never_choose_a_larger_bound():
    chosen = [count_choice(0.5, groups=groups) for groups in (1, 4, 12, 53, 365, 3650)]
    assert chosen == sorted(chosen, reverse=True)
    assert chosen[0] > chosen[-1]


def test_no_bound_above_the_largest_contribution():
    """Beyond the most rows any unit has, a larger bound adds noise and removes no bias:
    it is never chosen, and with little noise the choice is exactly that largest one."""
    profile = tuple([1000] * 17 + [0] * (CEILING + 1 - 17))  # units with 1 to 17 rows, none more
    assert count_choice(0.01, profile) <= 17
    assert count_choice(1e6, profile) == 17


def test_the_ceiling_binds_when_every_unit_is_above_it():
    profile = tuple([0] * CEILING + [5000])  # every unit has more than the ceiling
    assert count_choice(1.0, profile) == CEILING


def test_upper_bound_clips_nothing_when_noise_is_free_and_little_when_it_is_not():
    declared = {"x": (0.0, 500.0)}
    free = choose("t", geometric_profile(), {"x": AMOUNTS}, declared, [Demand("sum", sum_loss=1e6, measure="x")],
                  setting())
    assert free.uppers.get("x", (500.0,))[0] == 500.0 or free.uppers["x"][0] >= 450  # values reach the 450 bin
    costly = choose("t", geometric_profile(), {"x": AMOUNTS}, declared, [Demand("sum", sum_loss=0.01, measure="x")],
                    setting())
    assert costly.uppers["x"][0] < 450


def test_an_average_is_not_cut_to_one_row_per_unit():
    """Clipping drops rows, and the dropped rows of heavy units may differ in value: the
    model takes them a standard deviation away, so with little noise an average keeps
    most rows (C = 1 would weigh units, not rows, alike)."""
    choice = choose("t", geometric_profile(), {"x": AMOUNTS}, {"x": (0.0, 500.0)},
                    [Demand("ratio", rows_loss=1.0, sum_loss=1.0, measure="x")], setting())
    assert choice.total >= 20


def test_the_error_model_adds_bias_and_noise():
    profile = geometric_profile()
    demands = [Demand("rows", rows_loss=1.0)]
    rows = sum(n * u for n, u in enumerate(profile, 1))
    n = rows / 12
    beta = rows_beyond(profile, 20) / rows
    assert expected_error(20, {}, profile, {}, {}, demands, setting()) == pytest.approx(
        beta ** 2 + 2 * (20 / 1.0) ** 2 / n ** 2)


def test_profile_bins_past_the_ceiling_count_alike():
    """A profile with more bins than the ceiling + 1 chooses as one that merged them."""
    longer = geometric_profile(top=80)
    merged = longer[:CEILING] + (sum(longer[CEILING:]),)
    for epsilon in (0.05, 0.5, 5):
        assert count_choice(epsilon, longer) == count_choice(epsilon, merged) or \
            count_choice(epsilon, merged) == CEILING  # merged tails clip at least as much: never a lower choice


# -- the policy ---------------------------------------------------------------------------------

COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": ["north", "south", "east", "west"]},
    "spend": {"role": "measure", "bounds": [0, 100]},
}


def policy_with(profile: dict, ceiling: int | None = 5) -> dict:
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "sum", "avg"), k=2)
    policy["privacy"] = {"epsilon_per_query": 1.0, "max_rows_per_unit": 5, "max_groups_per_unit": 4,
                         "budget": {"epsilon": 1000, "delta": 0.001}, "profile": profile,
                         "min_group_size_on_public_keys": False}
    if ceiling is not None:
        policy["privacy"]["max_contributions_per_unit"] = ceiling
    return policy


def load_problems(tmp_path, policy: dict) -> list[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    return [p.replace(str(path), "policy.yaml") for p in info.value.problems]


GOOD = {"visits": {"epsilon": 1, "units_by_rows": [10, 5, 2, 1, 0, 0],
                   "measures": {"spend": {"edges": [0, 25, 50, 75, 100], "counts": [5, 5, 5, 5, 1]}}}}


def test_a_valid_profile_loads(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_with(GOOD), sort_keys=False))
    (profile,) = load_policy(path).privacy.profiles
    assert profile.table == "visits" and profile.units_by_rows == (10, 5, 2, 1, 0, 0)
    assert profile.measures[0].edges == (0, 25, 50, 75, 100) and profile.measures[0].counts == (5, 5, 5, 5, 1)


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["privacy"].pop("max_contributions_per_unit"),
     "privacy.profile: a profile needs max_contributions_per_unit"),
    (lambda p: p["privacy"]["profile"]["visits"].update(units_by_rows=[10, 5, 2]),
     "privacy.profile.visits.units_by_rows: 3 numbers cannot show the bias of every bound up to "
     "max_contributions_per_unit 5"),
    (lambda p: p["privacy"]["profile"]["visits"].update(units_by_rows=[0, 0, 0, 0, 0, 0]),
     "privacy.profile.visits.units_by_rows: every count is 0"),
    (lambda p: p["privacy"]["profile"]["visits"].update(units_by_rows=[10, -1, 0, 0, 0, 0]),
     "privacy.profile.visits.units_by_rows[1]: -1 is less than the minimum of 0"),
    (lambda p: p["privacy"]["profile"].update(nothing=p["privacy"]["profile"]["visits"]),
     "privacy.profile.nothing: unknown table 'nothing' (declared: visits)"),
    (lambda p: p["privacy"]["profile"]["visits"]["measures"].update(region={"edges": [0, 1], "counts": [1, 1]}),
     "privacy.profile.visits.measures.region: visits.region is not a measure with declared bounds"),
    (lambda p: p["privacy"]["profile"]["visits"]["measures"]["spend"].update(edges=[0, 50, 25, 75, 100]),
     "privacy.profile.visits.measures.spend.edges: edges must increase"),
    (lambda p: p["privacy"]["profile"]["visits"]["measures"]["spend"].update(edges=[0, 25, 50, 75, 200]),
     "privacy.profile.visits.measures.spend.edges: edges must run from the declared lower bound 0 to the declared "
     "upper bound 100"),
    (lambda p: p["privacy"]["profile"]["visits"]["measures"]["spend"].update(counts=[1, 2]),
     "privacy.profile.visits.measures.spend.counts: 2 counts for 5 edges"),
    (lambda p: p["privacy"]["profile"]["visits"].update(rows=3),
     "privacy.profile.visits.rows: unknown key (allowed: epsilon, units_by_rows, measures)"),
])
def test_profile_problems_name_their_place(tmp_path, change, expected):
    policy = policy_with(yaml.safe_load(yaml.safe_dump(GOOD)))
    change(policy)
    found = load_problems(tmp_path, policy)
    assert any(expected in p and p.startswith("policy.yaml:") and p.split(":")[1].isdigit() for p in found), found


# -- end to end ------------------------------------------------------------------------------------

# 200 households with one visit each in north, and one household with 1,000 visits there.
ONE_HEAVY = ["CREATE TABLE visits AS SELECT 'h' || i AS hh, 'north' AS region, 10.0 AS spend FROM range(200) t(i) "
             "UNION ALL SELECT 'heavy', 'north', 10.0 FROM range(1000)"]
# The same policy over other rows: 50 households with 20 visits each in south.
OTHER = ["CREATE TABLE visits AS SELECT 'h' || i AS hh, 'south' AS region, 90.0 AS spend "
         "FROM range(50) t(i), range(20) r(j)"]


def one_row_profile(ceiling: int) -> dict:
    """What an owner whose units all had one row would publish."""
    return {"visits": {"units_by_rows": [1000] + [0] * ceiling}}


def test_the_chosen_bound_is_applied_and_calibrates_the_noise(tmp_path):
    engine_policy = policy_with(one_row_profile(5), ceiling=5)
    engine_policy["privacy"]["epsilon_per_query"] = 100.0  # noise scale 0.01 per count: the bound shows
    engine = build_engine(tmp_path, engine_policy, ONE_HEAVY)
    try:
        release = engine.run(request("SELECT region, COUNT(*) AS n FROM visits GROUP BY region"))
        rows = {r["region"]: r["n"] for r in release.table.to_pylist()}
        assert rows["north"] == 201  # 200 one-visit households and the heavy one's single row
        bounds = release.protection["contribution_bounds"]
        assert bounds["chosen_for_this_query"]["max_contributions_per_unit"] == 1
        assert bounds["chosen_for_this_query"]["ceiling"] == 5
        (aggregate,) = release.protection["aggregates"]
        assert aggregate["noise"][0]["sensitivity"] == 1  # calibrated to the bound applied
        assert any("chosen for this query from the owner's contribution profile" in n for n in release.notices)
    finally:
        engine.close()


def test_the_choice_reads_the_policy_not_the_data(tmp_path):
    chosen = []
    for name, data in (("heavy", ONE_HEAVY), ("other", OTHER)):
        profile = {"visits": {"units_by_rows": [500, 300, 100, 50, 20, 10]}}
        (tmp_path / name).mkdir()
        engine = build_engine(tmp_path / name, policy_with(profile), data)
        try:
            described = engine.explain(request("SELECT region, COUNT(*), SUM(spend) FROM visits GROUP BY region"))
            chosen.append(described["differential_privacy"]["contribution_bounds"])
        finally:
            engine.close()
    assert chosen[0] == chosen[1]
    assert chosen[0]["chosen_for_this_query"]["max_contributions_per_unit"] <= 5


def test_no_choice_beyond_what_the_profile_counts(tmp_path):
    """A rule whose ceiling is above what the profile counts keeps its declared bound: the
    profile cannot show the bias there."""
    policy = policy_with({"visits": {"units_by_rows": [500, 300, 100, 50, 20, 10]}})
    policy["rules"]["agg"]["privacy"] = {"max_contributions_per_unit": 8}
    engine = build_engine(tmp_path, policy, ONE_HEAVY)
    try:
        described = engine.explain(request("SELECT region, COUNT(*) FROM visits GROUP BY region"))
        bounds = described["differential_privacy"]["contribution_bounds"]
        assert "chosen_for_this_query" not in bounds and bounds["max_contributions_per_unit"] == 8
    finally:
        engine.close()
