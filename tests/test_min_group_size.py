"""The k rewrite: a group of k-1 privacy units never leaves the engine, a group
of k does, however many rows each unit has, in every query shape."""

from __future__ import annotations

import pytest

from gateway.engine import QueryRequest
from gateway.errors import Refused
from tests.roomkit import Room, build_engine, private_table, simple_policy

K = 10

# Regions 'big' and 'other' have K households, 'small' has K-1, each household
# with 20 rows, so a row count alone would pass any threshold: only households count.
VISITS = [
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, "
    "CASE WHEN i < 10 THEN 'big' WHEN i < 19 THEN 'small' ELSE 'other' END AS region, "
    "(i * 7) % 100 AS spend FROM range(29) t(i), range(20) r(j)",
    # Outer-join partner: only households h0..h4 (5 < K) in 'big' have loyalty rows.
    "CREATE TABLE loyalty AS SELECT 'h' || i AS hh, 'gold' AS tier FROM range(5) t(i)",
]

COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension"},
    "spend": {"role": "measure", "bounds": [0, 50]},
}


TABLES = {
    "visits": private_table("visits", COLUMNS),
    "loyalty": private_table("loyalty", {"hh": {"role": "join_key"}, "tier": {"role": "dimension"}}, owner="b"),
}
TEMPLATES = {
    "spend_by_region": {
        "parameters": {"floor": {"type": "integer", "minimum": 0, "maximum": 100}},
        "sql": "WITH per_hh AS (SELECT hh, region, SUM(spend) AS total FROM visits GROUP BY hh, region) "
        "SELECT region, COUNT(*) AS households, AVG(total) AS avg_total FROM per_hh "
        "WHERE total >= :floor GROUP BY region ORDER BY region",
    }
}
ROOM = Room(simple_policy(TABLES, joins=[("visits.hh", "loyalty.hh")], k=K, templates=TEMPLATES),
            VISITS)  # the module's `engine` (tests/conftest.py)


def rows(engine, sql=None, template=None, params=()):
    request = QueryRequest(user="ana", cleanroom="room", sql=sql, template=template, params=params)
    return engine.run(request).table.to_pylist()


def test_group_of_k_minus_one_never_appears_and_k_does(engine):
    result = rows(engine, "SELECT region, count(*) FROM visits GROUP BY region ORDER BY region")
    assert result == [{"region": "big", "count": 200}, {"region": "other", "count": 200}]


def test_whole_table_is_one_group(engine):
    assert rows(engine, "SELECT count(*) FROM visits WHERE region = 'small'") == []
    assert rows(engine, "SELECT count(*) FROM visits WHERE region = 'big'") == [{"count": 200}]


def test_having_and_order_run_after_the_threshold(engine):
    result = rows(engine, "SELECT region, count(*) AS n FROM visits GROUP BY region HAVING count(*) > 0 ORDER BY region LIMIT 1")
    assert result == [{"region": "big", "n": 200}]


def test_outer_join_partner_below_k_is_suppressed(engine):
    # 5 loyalty households sit in 'big': a non-empty group of fewer than K from loyalty
    # is suppressed; in 'other' loyalty contributes no one at all, which is fine.
    result = rows(engine, "SELECT v.region, count(l.tier) AS tiers FROM visits v LEFT JOIN loyalty l ON v.hh = l.hh GROUP BY v.region")
    assert result == [{"region": "other", "tiers": 0}]


def test_inner_join_counts_units_of_both_tables(engine):
    assert rows(engine, "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh") == []


def test_measures_are_clamped_to_their_bounds(engine):
    # spend runs 0..98; the policy bounds it to [0, 50].
    result = rows(engine, "SELECT region, sum(spend) AS s, avg(spend) AS a FROM visits WHERE region = 'big' GROUP BY region")
    raw = [min(max((i * 7) % 100, 0), 50) * 20 for i in range(10)]
    assert result[0]["s"] == sum(raw)
    assert result[0]["a"] == pytest.approx(sum(raw) / 200)


def test_template_output_is_threshold_checked_through_its_cte(engine):
    big = {"region": "big", "households": 10, "avg_total": pytest.approx(sum((i * 7) % 100 * 20 for i in range(10)) / 10)}
    assert rows(engine, template="spend_by_region", params={"floor": 0})[0] == big
    # floor 1 drops h0 (spend 0): 'big' then has 9 households and disappears.
    assert [r["region"] for r in rows(engine, template="spend_by_region", params={"floor": 1})] == ["other"]


def test_generated_sql_carries_the_threshold(engine):
    state = engine.compile(QueryRequest(user="ana", cleanroom="room", sql="SELECT count(*) FROM visits"))
    assert 'QUALIFY COUNT(DISTINCT "visits"."hh") >= 10 OR ROW_NUMBER() OVER () = 1' in state.generated_sql


def test_suppressed_groups_are_counted_for_the_audit_log_and_never_released(engine):
    def run(sql):
        release = engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))
        return release.table.to_pylist(), engine.context.audit.records()[-1]["rows_suppressed"]

    # 'small' (K-1 households) is suppressed; the count says so, the rows do not show it
    assert run("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY n DESC, region") == (
        [{"region": "big", "n": 200}, {"region": "other", "n": 200}], 1)
    # the only group is below k: nothing is released, the count survives
    assert run("SELECT count(*) FROM visits WHERE region = 'small'") == ([], 1)
    # the analyst's HAVING removes groups before the k test: those are not "suppressed"
    assert run("SELECT region, count(*) FROM visits GROUP BY region HAVING count(*) > 1000") == ([], 0)
    # LIMIT applies to released rows only
    assert run("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region LIMIT 1") == (
        [{"region": "big", "n": 200}], 1)
    assert run("SELECT region FROM visits GROUP BY region ORDER BY region DESC LIMIT 1 OFFSET 1") == (
        [{"region": "big"}], 1)
    schema = engine.describe(QueryRequest(user="ana", cleanroom="room", sql="SELECT region, count(*) FROM visits GROUP BY region"))
    assert schema.names == ["region", "count"]


def test_stricter_table_k_wins(tmp_path):
    tables = {"visits": private_table("visits", COLUMNS, min_group_size=12)}
    engine = build_engine(tmp_path, simple_policy(tables, k=K), VISITS[:1])
    try:
        # 'big' has 10 households: enough for the clean room's k=10, not for the table's 12.
        assert rows(engine, "SELECT region, count(*) FROM visits WHERE region = 'big' GROUP BY region") == []
        release = engine.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT count(*) FROM visits"))
        assert release.min_group_size == 12
    finally:
        engine.close()


def test_template_whose_unit_does_not_reach_the_outer_query_is_rejected(tmp_path):
    from gateway.errors import PolicyInvalid

    templates = {
        "leaky": {
            "sql": "WITH per_region AS (SELECT region, SUM(spend) AS total FROM visits GROUP BY region) "
            "SELECT region, SUM(total) AS total FROM per_region GROUP BY region",
        }
    }
    tables = {"visits": private_table("visits", COLUMNS)}
    with pytest.raises(PolicyInvalid) as invalid:
        build_engine(tmp_path, simple_policy(tables, templates=templates), VISITS[:1])
    assert "privacy unit of visits does not reach the outer query" in str(invalid.value)


def test_min_and_max_need_the_rule_to_allow_them(engine):
    with pytest.raises(Refused) as refusal:
        rows(engine, "SELECT max(spend) FROM visits")
    assert refusal.value.rule == "aggregate.not_allowed"
