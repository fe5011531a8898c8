"""Public keys under differential privacy: `privacy.min_group_size_on_public_keys: false`
releases every combination of declared keys whatever its size, and gives the whole
query's loss to what the analyst asked for (no unit count is noised or paid for);
a unit is in no more groups than there are declared combinations, whatever
max_groups_per_unit says, so that bounds the sensitivity too."""

from __future__ import annotations

import pytest

from gateway.engine import QueryRequest
from gateway.errors import PolicyInvalid
from tests.roomkit import build_engine, private_table, simple_policy

REGIONS = ["north", "south", "east", "tiny", "empty"]
COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": REGIONS},
    "day": {"role": "dimension"},
    "spend": {"role": "measure", "bounds": [0, 100]},
}
# 3,000 households in north/south/east, one household in tiny, nobody in empty.
ROWS = ["CREATE TABLE visits AS SELECT 'h' || (i % 3000) AS hh, (['north', 'south', 'east'])[1 + i % 3] AS region, "
        "'d' || (i % 4) AS day, i % 100 AS spend FROM range(6000) t(i)",
        "INSERT INTO visits VALUES ('solo', 'tiny', 'd0', 50)"]


def make_engine(tmp_path, **privacy):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "count_distinct", "sum"),
                           k=10)
    policy["privacy"] = {"epsilon_per_query": 1.0, "max_rows_per_unit": 4, "max_groups_per_unit": 50,
                         "budget": {"epsilon": 1000, "delta": 0.01}, **privacy}
    return build_engine(tmp_path, policy, ROWS)


def run(engine, sql):
    return engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))


def test_without_k_on_public_keys_every_group_is_released_and_the_count_gets_the_whole_loss(tmp_path):
    engine = make_engine(tmp_path, min_group_size_on_public_keys=False)
    release = run(engine, "SELECT region, count(*) AS n, sum(spend) AS s FROM visits GROUP BY region ORDER BY region")
    assert release.table.column("region").to_pylist() == sorted(REGIONS)  # one household, or none, released too
    noises = {a["sql"]: a["noise"] for a in release.protection["aggregates"]}
    assert [n["epsilon"] for n in noises["count(*)"]] == [pytest.approx(0.5)]  # count and sum share it: no unit count
    assert [n["epsilon"] for n in noises["sum(spend)"]] == [pytest.approx(0.5)]
    assert release.protection["groups"]["min_group_size"] is None
    # Nothing says k was applied where it was not: the release, its audit record and EXPLAIN agree.
    assert release.min_group_size is None
    assert engine.context.audit.records()[-1]["min_group_size"] is None
    explained = engine.explain(QueryRequest(user="ana", cleanroom="room", sql="SELECT region, count(*) AS n FROM visits GROUP BY region"))
    assert explained["min_group_size"] is None
    assert any("all released, whatever their size" in n for n in release.notices)
    assert not any("suppressed" in n for n in release.notices)


def test_the_default_still_applies_k_to_a_noisy_unit_count_on_public_keys(tmp_path):
    engine = make_engine(tmp_path, epsilon_per_query=40.0)  # unit count at scale 0.25: an empty group stays below 10
    release = run(engine, "SELECT region, count(*) AS n FROM visits GROUP BY region")
    noise = {a["sql"]: a["noise"] for a in release.protection["aggregates"]}["count(*)"]
    assert [n["epsilon"] for n in noise] == [pytest.approx(20.0)]  # the other half counts units for k
    assert release.protection["groups"]["min_group_size"] == 10 == release.min_group_size
    regions = release.table.column("region").to_pylist()
    assert "empty" not in regions and "tiny" not in regions  # 0 and 1 household: below 10


def test_counting_units_is_still_noised_and_thresholded_when_asked(tmp_path):
    engine = make_engine(tmp_path, min_group_size_on_public_keys=False, epsilon_per_query=40.0)  # scale 0.125
    release = run(engine, "SELECT region, count(DISTINCT hh) AS households FROM visits GROUP BY region")
    assert release.protection["groups"]["min_group_size"] == 10
    assert "empty" not in release.table.column("region").to_pylist()


def test_private_selection_keeps_its_threshold(tmp_path):
    engine = make_engine(tmp_path, min_group_size_on_public_keys=False)
    release = run(engine, "SELECT day, count(*) AS n FROM visits GROUP BY day")
    assert release.protection["groups"]["keys"] == "selected privately" and release.protection["delta"] > 0
    assert release.protection["groups"]["min_group_size"] == 10


def test_a_unit_is_in_no_more_groups_than_there_are_declared_keys(tmp_path):
    """max_groups_per_unit 50, five declared regions: the count's sensitivity is 4 rows x 5 groups."""
    engine = make_engine(tmp_path, min_group_size_on_public_keys=False)
    release = run(engine, "SELECT region, count(*) AS n FROM visits GROUP BY region")
    noise = release.protection["aggregates"][0]["noise"][0]
    assert noise["sensitivity"] == 20
    assert release.protection["contribution_bounds"]["max_groups_per_unit"] == 5
    single = run(engine, "SELECT count(*) AS n FROM visits")  # one group: 4 rows
    assert single.protection["aggregates"][0]["noise"][0]["sensitivity"] == 4


def test_the_setting_must_be_a_boolean(tmp_path):
    with pytest.raises(PolicyInvalid, match="min_group_size_on_public_keys"):
        make_engine(tmp_path, min_group_size_on_public_keys="sometimes")
