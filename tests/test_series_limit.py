"""A BI tool's series limit (the outer aggregate joined to its own top-n keys) is the
outer aggregate released alone, then kept to its top n keys by their released totals:
the same rows as the flat query restricted to those keys, charged once. Shapes whose
ranking cannot be read off the outer release stay refused."""

from __future__ import annotations

import pytest

from gateway.engine import QueryRequest
from gateway.errors import Refused
from tests.roomkit import build_engine, private_table, simple_policy

FILTER = "purchased_on >= TO_DATE('2026-01-01', 'YYYY-MM-DD') AND purchased_on < TO_DATE('2026-07-01', 'YYYY-MM-DD')"
SUPERSET = f"""
SELECT DATE_TRUNC('month', purchased_on) AS purchased_on, region AS region, COUNT(*) AS count
FROM public.purchases
JOIN (SELECT region AS region__, COUNT(*) AS mme_inner__ FROM public.purchases WHERE {FILTER}
      GROUP BY region ORDER BY mme_inner__ DESC LIMIT 3) AS series_limit ON region = region__
WHERE {FILTER}
GROUP BY DATE_TRUNC('month', purchased_on), region
ORDER BY count DESC
LIMIT 10000"""
FLAT = (f"SELECT DATE_TRUNC('month', purchased_on) AS purchased_on, region, COUNT(*) AS count FROM purchases "
        f"WHERE {FILTER} GROUP BY 1, 2")


def rows(engine, sql):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql)).table.to_pylist()


def test_the_series_limit_keeps_the_top_keys_of_the_released_rows(engine):
    flat = rows(engine, FLAT)
    totals = {}
    for row in flat:
        totals[row["region"]] = totals.get(row["region"], 0) + row["count"]
    top = sorted(totals, key=lambda r: (-totals[r], r))[:3]
    limited = rows(engine, SUPERSET)
    assert {r["region"] for r in limited} == set(top)
    expected = sorted((r for r in flat if r["region"] in top), key=lambda r: -r["count"])
    assert [r["count"] for r in limited] == [r["count"] for r in expected]  # ORDER BY count DESC kept
    assert sorted(map(tuple, (r.values() for r in limited))) == sorted(map(tuple, (r.values() for r in expected)))


def test_the_notice_says_how_the_rows_were_kept(engine):
    release = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=SUPERSET))
    assert release.notices[-1].startswith("series limit: the released rows were kept to the 3 value(s) of region")


@pytest.mark.parametrize("inner_where, ranking, side", [
    ("category = 'baby'", "COUNT(*)", ""),  # ranked on other rows than the outer's
    (FILTER, "AVG(amount)", ""),  # an average does not add up over months
    (FILTER, "COUNT(*)", "LEFT "),
])
def test_a_ranking_the_release_cannot_give_stays_refused(engine, inner_where, ranking, side):
    sql = SUPERSET.replace(f"WHERE {FILTER}\n      GROUP BY", f"WHERE {inner_where}\n      GROUP BY", 1)
    sql = sql.replace("COUNT(*) AS mme_inner__", f"{ranking} AS mme_inner__").replace("\nJOIN", f"\n{side}JOIN")
    with pytest.raises(Refused) as refused:
        rows(engine, sql)
    assert refused.value.rule in ("query.subquery", "aggregate.not_allowed")


COLUMNS = {"hh": {"role": "join_key"}, "region": {"role": "dimension", "values": ["a", "b", "c", "d"]},
           "day": {"role": "dimension", "values": ["d1", "d2"]}}
ROWS = ["CREATE TABLE visits AS SELECT 'h' || (i % 800) AS hh, (['a', 'b', 'c', 'd'])[1 + (i // 7) % 4] AS region, "
        "(['d1', 'd2'])[1 + i % 2] AS day FROM range(4000) t(i)"]


def test_under_differential_privacy_only_the_outer_aggregate_is_charged(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, aggregates=("count",), k=5)
    policy["privacy"] = {"epsilon_per_query": 1.0, "budget": {"epsilon": 100, "delta": 0.01}}
    engine = build_engine(tmp_path, policy, ROWS)
    sql = ("SELECT day, region, COUNT(*) AS n FROM visits JOIN (SELECT region AS r__, COUNT(*) AS m FROM visits "
           "GROUP BY region ORDER BY m DESC LIMIT 2) AS series_limit ON region = r__ GROUP BY day, region")
    release = engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))
    assert engine.budget("ana", "room")["spent"]["epsilon"] == 1.0
    assert len({r["region"] for r in release.table.to_pylist()}) == 2 and release.table.num_rows == 4
    schema = engine.describe(QueryRequest(user="ana", cleanroom="room", sql=sql))
    assert schema.names == ["day", "region", "n"]
