"""Differential tests of the k-only demo clean room: for allowed statements, the
rows the gateway releases are exactly those of the same query written directly
in DuckDB over the same attached relations, keeping only groups with at least
k distinct households of each private table read (an outer join's optional
side: none or at least k, the gateway's rule). Compared as multisets, numbers
within a relative 1e-6.

References name relations @@purchases@@, @@impressions@@, @@regions@@; the
attached relations (gateway.sources.relation_for) are substituted.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from gateway.engine import QueryRequest
from tests.sqlgen import Room, close, normalise, table_rows

K = 10
P_K = f"count(DISTINCT p.household_id) >= {K}"
I_K = f"count(DISTINCT i.household_id) >= {K}"
I_OPTIONAL = f"(count(DISTINCT i.household_id) = 0 OR count(DISTINCT i.household_id) >= {K})"
P_OPTIONAL = f"(count(DISTINCT p.household_id) = 0 OR count(DISTINCT p.household_id) >= {K})"

CASES = [
    ("single_table",
     "SELECT region, COUNT(*) FROM purchases GROUP BY region",
     f"SELECT region, count(*) FROM @@purchases@@ p GROUP BY region HAVING {P_K}"),
    ("small_groups_by_day",
     "SELECT region, category, purchased_on, COUNT(*) AS n, SUM(amount) AS total FROM purchases "
     "WHERE region = 'islands' GROUP BY region, category, purchased_on",
     "SELECT region, category, purchased_on, count(*), sum(amount) FROM @@purchases@@ p "
     f"WHERE region = 'islands' GROUP BY region, category, purchased_on HAVING {P_K}"),
    ("avg_and_units_in_a_week",
     "SELECT category, AVG(amount), COUNT(DISTINCT household_id) FROM purchases "
     "WHERE purchased_on BETWEEN DATE '2026-03-01' AND DATE '2026-03-07' GROUP BY category",
     "SELECT category, avg(amount), count(DISTINCT household_id) FROM @@purchases@@ p "
     f"WHERE purchased_on BETWEEN DATE '2026-03-01' AND DATE '2026-03-07' GROUP BY category HAVING {P_K}"),
    ("impressions_two_dimensions",
     "SELECT campaign, channel, COUNT(*) FROM impressions GROUP BY campaign, channel",
     f"SELECT campaign, channel, count(*) FROM @@impressions@@ i GROUP BY campaign, channel HAVING {I_K}"),
    ("impressions_by_day_small",
     "SELECT CAST(shown_at AS DATE) AS day, COUNT(*) FROM impressions "
     "WHERE campaign = 'new_year' AND channel = 'audio' GROUP BY 1",
     "SELECT CAST(shown_at AS DATE), count(*) FROM @@impressions@@ i "
     f"WHERE campaign = 'new_year' AND channel = 'audio' GROUP BY 1 HAVING {I_K}"),
    ("declared_join",
     "SELECT p.region, i.campaign, COUNT(DISTINCT p.household_id) AS buyers FROM purchases p "
     "JOIN impressions i ON p.household_id = i.household_id GROUP BY p.region, i.campaign",
     "SELECT p.region, i.campaign, count(DISTINCT p.household_id) FROM @@purchases@@ p "
     f"JOIN @@impressions@@ i ON p.household_id = i.household_id GROUP BY 1, 2 HAVING {P_K} AND {I_K}"),
    ("join_small_groups",
     "SELECT p.purchased_on, i.channel, COUNT(*) FROM purchases p JOIN impressions i "
     "ON p.household_id = i.household_id WHERE p.region = 'islands' AND p.category = 'baby' GROUP BY 1, 2",
     "SELECT p.purchased_on, i.channel, count(*) FROM @@purchases@@ p JOIN @@impressions@@ i "
     "ON p.household_id = i.household_id WHERE p.region = 'islands' AND p.category = 'baby' "
     f"GROUP BY 1, 2 HAVING {P_K} AND {I_K}"),
    ("left_join_optional_side",
     "SELECT date_trunc('month', p.purchased_on) AS month, i.channel, COUNT(*) FROM purchases p "
     "LEFT JOIN impressions i ON p.household_id = i.household_id "
     "WHERE p.region = 'islands' AND p.category = 'baby' GROUP BY 1, 2",
     "SELECT date_trunc('month', p.purchased_on), i.channel, count(*) FROM @@purchases@@ p "
     "LEFT JOIN @@impressions@@ i ON p.household_id = i.household_id "
     f"WHERE p.region = 'islands' AND p.category = 'baby' GROUP BY 1, 2 HAVING {P_K} AND {I_OPTIONAL}"),
    ("right_join_optional_side",
     "SELECT i.campaign, p.category, COUNT(DISTINCT i.household_id) FROM purchases p "
     "RIGHT JOIN impressions i ON p.household_id = i.household_id WHERE i.channel = 'audio' GROUP BY 1, 2",
     "SELECT i.campaign, p.category, count(DISTINCT i.household_id) FROM @@purchases@@ p "
     "RIGHT JOIN @@impressions@@ i ON p.household_id = i.household_id WHERE i.channel = 'audio' "
     f"GROUP BY 1, 2 HAVING {I_K} AND {P_OPTIONAL}"),
    ("having",
     "SELECT region, SUM(amount) FROM purchases GROUP BY region HAVING COUNT(*) > 6000",
     f"SELECT region, sum(amount) FROM @@purchases@@ p GROUP BY region HAVING count(*) > 6000 AND {P_K}"),
    ("case_aggregates",
     "SELECT category, SUM(CASE WHEN region = 'north' THEN amount ELSE 0 END) AS north, "
     "SUM(CASE WHEN region IN ('south', 'east') THEN 1 ELSE 0 END) AS south_east FROM purchases GROUP BY category",
     "SELECT category, sum(CASE WHEN region = 'north' THEN amount ELSE 0 END), "
     "sum(CASE WHEN region IN ('south', 'east') THEN 1 ELSE 0 END) FROM @@purchases@@ p "
     f"GROUP BY category HAVING {P_K}"),
    ("filter_aggregates",
     "SELECT channel, COUNT(*) FILTER (WHERE campaign = 'spring_sale') AS spring, "
     "COUNT(*) FILTER (WHERE campaign = 'new_year') AS new_year FROM impressions GROUP BY channel",
     "SELECT channel, count(*) FILTER (WHERE campaign = 'spring_sale'), "
     f"count(*) FILTER (WHERE campaign = 'new_year') FROM @@impressions@@ i GROUP BY channel HAVING {I_K}"),
    ("quoted_names",
     'SELECT "region", COUNT(*) AS "N" FROM "purchases" WHERE "category" = \'pets\' GROUP BY "region"',
     f"SELECT region, count(*) FROM @@purchases@@ p WHERE category = 'pets' GROUP BY region HAVING {P_K}"),
    ("upper_case_names",
     "SELECT REGION, COUNT(*) FROM PURCHASES WHERE CATEGORY = 'baby' AND PURCHASED_ON < DATE '2026-02-01' "
     "GROUP BY REGION",
     "SELECT region, count(*) FROM @@purchases@@ p WHERE category = 'baby' AND purchased_on < DATE '2026-02-01' "
     f"GROUP BY region HAVING {P_K}"),
    ("mixed_case_alias",
     "select P.Region, Sum(P.Amount) from Purchases AS P where p.CATEGORY = 'meat' group by P.Region",
     f"SELECT region, sum(amount) FROM @@purchases@@ p WHERE category = 'meat' GROUP BY region HAVING {P_K}"),
    ("tableau_wrapped",
     'SELECT "t0"."region" AS "region", "t0"."n" AS "n" FROM '
     '(SELECT region, COUNT(*) AS n FROM purchases WHERE purchased_on = DATE \'2026-05-05\' GROUP BY region) "t0" '
     'WHERE "t0"."n" > 5',
     "SELECT region, count(*) FROM @@purchases@@ p WHERE purchased_on = DATE '2026-05-05' GROUP BY region "
     f"HAVING count(*) > 5 AND {P_K}"),
    ("power_bi_wrapped",
     "SELECT * FROM (SELECT category, SUM(amount) AS s FROM "
     "(SELECT category, amount, household_id FROM purchases WHERE region = 'coast') AS rows GROUP BY category) _ "
     "WHERE s > 0 LIMIT 1000001",
     "SELECT category, sum(amount) FROM @@purchases@@ p WHERE region = 'coast' GROUP BY category "
     f"HAVING sum(amount) > 0 AND {P_K}"),
    ("cte_wrapped",
     "WITH q AS (SELECT campaign, COUNT(*) AS n FROM impressions WHERE channel = 'ctv' GROUP BY campaign) "
     "SELECT * FROM q",
     f"SELECT campaign, count(*) FROM @@impressions@@ i WHERE channel = 'ctv' GROUP BY campaign HAVING {I_K}"),
    ("cte_named_like_its_table",
     "WITH purchases AS (SELECT * FROM purchases WHERE region = 'islands' AND category = 'baby') "
     "SELECT category, date_trunc('month', purchased_on), COUNT(*) FROM purchases GROUP BY 1, 2",
     "SELECT category, date_trunc('month', purchased_on), count(*) FROM @@purchases@@ p "
     f"WHERE region = 'islands' AND category = 'baby' GROUP BY 1, 2 HAVING {P_K}"),
    ("one_group",
     "SELECT COUNT(*), SUM(amount) FROM purchases WHERE region = 'north'",
     f"SELECT count(*), sum(amount) FROM @@purchases@@ p WHERE region = 'north' HAVING {P_K}"),
    ("one_small_group",
     "SELECT COUNT(*) FROM purchases WHERE purchased_on = DATE '2026-01-01' AND region = 'islands' "
     "AND category = 'baby'",
     "SELECT count(*) FROM @@purchases@@ p WHERE purchased_on = DATE '2026-01-01' AND region = 'islands' "
     f"AND category = 'baby' HAVING {P_K}"),
    ("public_join",
     "SELECT r.country, COUNT(*) FROM purchases p JOIN regions r ON p.region = r.region GROUP BY r.country",
     "SELECT r.country, count(*) FROM @@purchases@@ p JOIN @@regions@@ r ON p.region = r.region "
     f"GROUP BY r.country HAVING {P_K}"),
    ("three_tables",
     "SELECT r.country, i.channel, COUNT(DISTINCT i.household_id) FROM purchases p "
     "JOIN impressions i ON p.household_id = i.household_id JOIN regions r ON p.region = r.region "
     "WHERE r.country IN ('GR', 'PT') AND p.purchased_on < DATE '2026-01-15' GROUP BY 1, 2",
     "SELECT r.country, i.channel, count(DISTINCT i.household_id) FROM @@purchases@@ p "
     "JOIN @@impressions@@ i ON p.household_id = i.household_id JOIN @@regions@@ r ON p.region = r.region "
     f"WHERE r.country IN ('GR', 'PT') AND p.purchased_on < DATE '2026-01-15' GROUP BY 1, 2 HAVING {P_K} AND {I_K}"),
    ("order_by_limit",
     "SELECT region, category, COUNT(*) AS n FROM purchases WHERE purchased_on = DATE '2026-06-01' "
     "GROUP BY 1, 2 ORDER BY n DESC, region, category LIMIT 5",
     "SELECT region, category, count(*) AS n FROM @@purchases@@ p WHERE purchased_on = DATE '2026-06-01' "
     f"GROUP BY 1, 2 HAVING {P_K} ORDER BY n DESC, region, category LIMIT 5"),
    ("join_avg",
     "SELECT i.campaign, AVG(p.amount) FROM impressions i JOIN purchases p ON i.household_id = p.household_id "
     "WHERE i.channel = 'audio' AND p.category = 'pets' GROUP BY i.campaign",
     "SELECT i.campaign, avg(p.amount) FROM @@impressions@@ i JOIN @@purchases@@ p "
     "ON i.household_id = p.household_id WHERE i.channel = 'audio' AND p.category = 'pets' "
     f"GROUP BY i.campaign HAVING {P_K} AND {I_K}"),
    ("like_prefix",
     "SELECT region, COUNT(*) FROM purchases WHERE category LIKE 'p%' AND purchased_on = DATE '2026-09-09' "
     "GROUP BY region",
     "SELECT region, count(*) FROM @@purchases@@ p WHERE category LIKE 'p%' AND purchased_on = DATE '2026-09-09' "
     f"GROUP BY region HAVING {P_K}"),
    ("full_join",
     "SELECT p.region, i.channel, COUNT(*) FROM purchases p FULL JOIN impressions i "
     "ON p.household_id = i.household_id WHERE p.category = 'baby' OR i.campaign = 'new_year' GROUP BY 1, 2",
     "SELECT p.region, i.channel, count(*) FROM @@purchases@@ p FULL JOIN @@impressions@@ i "
     "ON p.household_id = i.household_id WHERE p.category = 'baby' OR i.campaign = 'new_year' "
     f"GROUP BY 1, 2 HAVING {P_OPTIONAL} AND {I_OPTIONAL}"),
]


@pytest.fixture(scope="module")
def room(engine):
    return Room(engine)


def without_threshold(reference: str) -> str:
    for condition in (P_OPTIONAL, I_OPTIONAL, P_K, I_K):
        reference = reference.replace(condition, "TRUE")
    return reference


def test_the_threshold_drops_groups_in_these_cases(room):
    """So that the comparison tests the threshold, not only the arithmetic."""
    dropped = {name: len(room.fetch(room.substitute(without_threshold(ref)))) - len(room.fetch(room.substitute(ref)))
               for name, _, ref in CASES if " LIMIT " not in ref}
    assert sum(dropped.values()) > 50, dropped
    for name in ("small_groups_by_day", "join_small_groups", "left_join_optional_side", "one_small_group",
                 "cte_named_like_its_table"):
        assert dropped[name] > 0, name


@pytest.mark.parametrize("sql, reference", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_released_rows_equal_the_reference(engine, room, sql, reference):
    release = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))
    released = table_rows(release.table)
    expected = room.fetch(room.substitute(reference))
    if expected:
        assert release.table.num_columns == len(expected[0])
    missing, extra = multiset_difference(expected, released)
    assert not missing and not extra, (
        f"{len(released)} rows released, {len(expected)} expected\n"
        f"expected but not released ({len(missing)}): {missing[:5]}\n"
        f"released but not expected ({len(extra)}): {extra[:5]}")


def multiset_difference(expected: list[tuple], released: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(expected rows not released, released rows not expected), matching rows one to one:
    by normalised value first, then with the tolerance for what rounding kept apart."""
    buckets: dict[tuple, list[tuple]] = defaultdict(list)
    for ref in expected:
        buckets[tuple(normalise(v) for v in ref)].append(ref)
    unmatched = []
    for row in released:
        bucket = buckets.get(tuple(normalise(v) for v in row))
        if bucket:
            bucket.pop()
        else:
            unmatched.append(row)
    remaining = [ref for bucket in buckets.values() for ref in bucket]
    extra = []
    for row in unmatched:
        match = next((n for n, ref in enumerate(remaining)
                      if len(ref) == len(row) and all(close(a, b) for a, b in zip(row, ref))), None)
        if match is None:
            extra.append(row)
        else:
            remaining.pop(match)
    return remaining, extra
