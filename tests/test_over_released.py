"""Queries over one released aggregate (Superset's row count and SQL datasets): the
inner aggregate is released exactly as if sent alone, and the outer query runs on
its released rows only, at no further privacy cost; what the outer part may not do
(read anything else, call a function outside the allow-list, use a window) is
refused as in any query."""

from __future__ import annotations

import pyarrow as pa
import pytest

from gateway.engine import QueryRequest
from gateway.errors import Refused, UnknownColumn
from tests.roomkit import build_engine, private_table, simple_policy

INNER = "SELECT category, region, COUNT(*) AS n, SUM(amount) AS s FROM purchases GROUP BY category, region"


def rows(engine, sql: str, user="analyst", room="demo") -> list[dict]:
    return engine.run(QueryRequest(user=user, cleanroom=room, sql=sql)).table.to_pylist()


def test_superset_row_count_counts_the_released_rows(engine):
    released = rows(engine, INNER)
    assert released  # k-only demo: groups of at least k households
    counted = rows(engine, f"SELECT COUNT(*) AS rowcount FROM ({INNER}) AS rowcount_qry")
    assert counted == [{"rowcount": len(released)}]


def test_a_chart_on_a_sql_dataset_aggregates_the_released_rows(engine):
    released = rows(engine, INNER)
    expected = {}
    for row in released:
        expected[row["category"]] = expected.get(row["category"], 0) + row["n"]
    chart = rows(engine, f"SELECT category, SUM(n) AS total, COUNT(*) AS regions FROM ({INNER}) AS virtual_table "
                         "GROUP BY category ORDER BY total DESC LIMIT 100")
    assert {r["category"]: r["total"] for r in chart} == expected
    assert [r["total"] for r in chart] == sorted(expected.values(), reverse=True)
    distinct = rows(engine, f"SELECT DISTINCT region FROM ({INNER}) AS v ORDER BY region")
    assert [r["region"] for r in distinct] == sorted({r["region"] for r in released})


def test_the_outer_query_says_it_computed_from_released_rows(engine):
    release = engine.run(QueryRequest(user="analyst", cleanroom="demo",
                                      sql=f"SELECT max(s) AS top FROM ({INNER}) AS v"))
    assert any("computed from the" in n and "released row(s)" in n for n in release.notices)
    assert any(n.startswith("every row comes from at least") for n in release.notices)


def test_describe_gives_the_outer_columns_without_running(engine):
    schema = engine.describe(QueryRequest(user="analyst", cleanroom="demo",
                                          sql=f"SELECT region, COUNT(*) AS c, AVG(n) AS mean FROM ({INNER}) v "
                                              "GROUP BY region"))
    assert schema.names == ["region", "c", "mean"]
    assert schema.field("c").type == pa.int64() and pa.types.is_floating(schema.field("mean").type)


@pytest.mark.parametrize("sql, rule", [
    (f"SELECT getenv('HOME') FROM ({INNER}) v", "function.not_allowed"),
    (f"SELECT current_setting('threads') FROM ({INNER}) v", "function.not_allowed"),
    (f"SELECT n, row_number() OVER (ORDER BY n) FROM ({INNER}) v", "query.window_function"),
    (f"SELECT count(*) FROM ({INNER}) v, purchases p", "query.subquery"),
    (f"SELECT count(*) FROM ({INNER}) v WHERE v.region IN (SELECT region FROM purchases)", "query.subquery"),
    ("SELECT count(*) FROM (SELECT household_id, count(*) FROM purchases GROUP BY household_id) v",
     "column.join_key_in_group_by"),  # the inner query is checked as if sent alone
    ("SELECT v.amount FROM (SELECT amount FROM purchases) v", "query.not_aggregated"),
])
def test_what_the_outer_part_may_not_do_is_refused(engine, sql, rule):
    with pytest.raises(Refused) as refused:
        rows(engine, sql)
    assert refused.value.rule == rule


def test_the_outer_query_sees_only_the_released_columns(engine):
    with pytest.raises(UnknownColumn):
        rows(engine, f"SELECT sum(v.amount) FROM ({INNER}) v")


COLUMNS = {"hh": {"role": "join_key"}, "region": {"role": "dimension", "values": ["north", "south", "east"]},
           "spend": {"role": "measure", "bounds": [0, 100]}}
VISITS = ["CREATE TABLE visits AS SELECT 'h' || (i % 900) AS hh, (['north', 'south', 'east'])[1 + i % 3] AS region, "
          "i % 100 AS spend FROM range(3000) t(i)"]


def test_under_differential_privacy_the_outer_query_is_free_post_processing(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "sum"), k=5)
    policy["privacy"] = {"epsilon_per_query": 1.0, "max_rows_per_unit": 5, "max_groups_per_unit": 3,
                         "budget": {"epsilon": 100, "delta": 0.001}}
    engine = build_engine(tmp_path, policy, VISITS)
    inner = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"
    outer = engine.run(QueryRequest(user="ana", cleanroom="room", sql=f"SELECT sum(n) AS total FROM ({inner}) q"))
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 1.0  # the inner release, once
    alone = rows(engine, inner, user="ana", room="room")
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 1.0  # the same release: free
    assert outer.table.to_pylist() == [{"total": sum(r["n"] for r in alone)}]
    assert outer.protection["post_processing"]["rows_in"] == 3 and outer.protection["columns"] == {}
    again = rows(engine, f"SELECT count(*) AS groups, min(n) AS low FROM ({inner}) AS rowcount_qry",
                 user="ana", room="room")
    assert again == [{"groups": 3, "low": min(r["n"] for r in alone)}]
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 1.0


def test_with_intervals_on_a_sql_dataset_can_read_its_aggregates_intervals(tmp_path):
    """SET cleanroom.intervals = on: the derived aggregate's n_low / n_high exist for the
    outer query (a BI chart on a SQL dataset draws error bars from them), filled from
    the release's own per-row intervals."""
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "sum"), k=5)
    policy["privacy"] = {"epsilon_per_query": 1.0, "max_rows_per_unit": 5, "max_groups_per_unit": 3,
                         "budget": {"epsilon": 100, "delta": 0.001}}
    engine = build_engine(tmp_path, policy, VISITS)
    inner = "SELECT region, COUNT(*) AS n, SUM(spend) AS s FROM visits GROUP BY region"

    def ask(sql, intervals=True):
        request = QueryRequest(user="ana", cleanroom="room", sql=sql, intervals=intervals)
        return engine.run(request), engine.describe(request)

    chart, schema = ask(f"SELECT region, n, n_low, n_high FROM ({inner}) AS virtual_table ORDER BY region")
    assert schema.names == chart.table.column_names == ["region", "n", "n_low", "n_high"]
    rows = chart.table.to_pylist()
    assert len(rows) == 3 and all(r["n_low"] <= r["n"] <= r["n_high"] for r in rows)
    summed, schema = ask(f"SELECT sum(n) AS total, max(s_high - s_low) AS widest FROM ({inner}) AS v")
    assert schema.names == ["total", "widest"] and summed.table.to_pylist()[0]["widest"] > 0
    # two releases: the chart read n only (flattened, its SUM never computed); this one reads n and s
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 2.0
    again, _ = ask(f"SELECT min(n_low) AS low FROM ({inner}) AS v")
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 2.0 and again.table.to_pylist()[0]["low"] is not None
    with pytest.raises(UnknownColumn):  # without the setting the columns do not exist
        ask(f"SELECT region, n_low FROM ({inner}) AS v", intervals=False)
