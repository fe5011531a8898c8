"""cleanroom.budget and cleanroom.releases: an analyst's own balance and paid releases
as tables a BI tool can chart, from the ledger and the release cache only; another
analyst's never show, and nothing but allow-listed SQL runs on them."""

from __future__ import annotations

import pytest

from gateway.engine import QueryRequest
from gateway.errors import Refused, UnknownTable
from tests.roomkit import build_engine, private_table, simple_policy

COLUMNS = {"hh": {"role": "join_key"}, "region": {"role": "dimension", "values": ["north", "south"]},
           "spend": {"role": "measure", "bounds": [0, 10]}}
ROWS = ["CREATE TABLE visits AS SELECT 'h' || (i % 400) AS hh, (['north', 'south'])[1 + i % 2] AS region, "
        "i % 10 AS spend FROM range(2000) t(i)"]


def dp_engine(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count", "sum"), k=5)
    policy["analysts"]["bob"] = {"collaborator": "a", "rules": ["agg"]}
    policy["privacy"] = {"epsilon_per_query": 0.5, "budget": {"epsilon": 10, "delta": 0.01}}
    return build_engine(tmp_path, policy, ROWS)


def run(engine, sql, user="ana"):
    return engine.run(QueryRequest(user=user, cleanroom="room", sql=sql))


def test_the_budget_and_each_paid_release_as_tables(tmp_path):
    engine = dp_engine(tmp_path)
    run(engine, "SELECT region, count(*) AS n, sum(spend) AS s FROM visits GROUP BY region")
    run(engine, "SELECT count(*) FROM visits")
    run(engine, "SELECT count(*) AS again FROM visits")  # the same release: free, no new row
    run(engine, "SELECT count(*) FROM visits", user="bob")  # another analyst's
    budget = run(engine, "SELECT * FROM cleanroom.budget").table.to_pylist()[0]
    balance = engine.budget("ana", "room")
    assert budget["epsilon_spent"] == balance["spent"]["epsilon"] == 1.0
    assert budget["epsilon_remaining"] == 9.0 and budget["queries"] == 2 and budget["enabled"]
    releases = run(engine, "SELECT epsilon, intervals, groups_released FROM cleanroom.releases ORDER BY at").table
    rows = releases.to_pylist()
    assert [r["epsilon"] for r in rows] == [0.5, 0.5]  # bob's charge is not ana's
    assert rows[0]["groups_released"] == 2 and rows[0]["intervals"].count("±") == 2
    assert rows[1]["groups_released"] == 1 and "__" not in rows[0]["intervals"]  # no internal name
    total = run(engine, "SELECT sum(epsilon) AS spent, count(*) FROM cleanroom.releases").table.to_pylist()
    assert total == [{"spent": 1.0, "count": 2}]
    assert run(engine, "SELECT count(*) FROM cleanroom.releases", user="bob").table.to_pylist() == [{"count": 1}]


@pytest.mark.parametrize("sql, error", [
    ("SELECT getenv('HOME') FROM cleanroom.budget", Refused),
    ("SELECT * FROM cleanroom.releases r JOIN visits v ON true", UnknownTable),  # never beside clean-room data
    ("SELECT * FROM cleanroom.secrets", UnknownTable),
    ("SELECT count(*) FROM cleanroom.releases a, cleanroom.releases b, cleanroom.releases c", Refused),
    ("SELECT count(*) FROM cleanroom.releases a JOIN cleanroom.budget b ON true", Refused),
    ("SELECT (SELECT count(*) FROM cleanroom.releases) FROM cleanroom.budget", Refused),
    ("SELECT * FROM cleanroom.budget UNION ALL SELECT * FROM cleanroom.budget", Refused),
])
def test_nothing_else_is_read_with_them(tmp_path, sql, error):
    engine = dp_engine(tmp_path)
    with pytest.raises(error):
        run(engine, sql)


def test_without_differential_privacy_nothing_is_spent(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count",), k=5)
    engine = build_engine(tmp_path, policy, ROWS)
    assert run(engine, "SELECT enabled, queries FROM cleanroom.budget").table.to_pylist() == [
        {"enabled": False, "queries": 0}]
    assert run(engine, "SELECT count(*) FROM cleanroom.releases").table.to_pylist() == [{"count": 0}]
