"""Fast, focused tests of the enforcement logic (authorise, rewrite, the DP plan
and bounding), written to kill mutants (bench/mutation.py): each test pins one
decision at its boundary, mostly through Engine.compile, running a statement
only where the rows themselves are the point. Two small rooms, built once per
module, and the DP room's policy alone (no engine) for the stability checks.

k room (k = 5): visits(hh unit, region, spend measure [0, 50]) in regions
a..d with exactly k households each and e with k-1; loyalty, the optional side
of outer joins, has 1 household in a, k-1 in b, k in c and none in d; regions
is public; secret is private, and only the rule solo covers it. The analyst's
rules, in order: agg (no AVG), then narrow (visits, AVG and COUNT, k = 6), then
solo (secret, whose own k is 7).

DP room: visits with spend bounded to [10, 30], public keys region and
c100a/c100b/c73/c137 (grids of exactly 10,000 and 10,001), every household in
3 days (over max_groups_per_unit 2) with 6 rows (over max_rows_per_unit 3).

The resolver refuses most shapes before authorise sees them; authorise still
checks them (defence in depth), so some tests hand it a tree the earlier passes
would never produce: the state of an accepted statement with a crafted tree.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import sqlglot

from gateway.engine import QueryRequest
from gateway.engine import authorise as authorise_pass
from gateway.engine import pipeline
from gateway.engine import rewrite as rewrite_pass
from gateway.errors import GatewayError, Refused
from tests.roomkit import build_engine, private_table

K = 5

VISITS = [
    # h0..h23, two rows each; h(5r)..h(5r+4) in region r; e (h20..h23) has K-1 households;
    # spend = 3i runs 0..69 over declared bounds [0, 50]; two rows with no unit in c.
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, ['a', 'b', 'c', 'd', 'e'][1 + i // 5] AS region, "
    "3 * i AS spend FROM range(24) t(i), range(2) r(j)",
    "INSERT INTO visits VALUES (NULL, 'c', 1), (NULL, 'c', 1)",
    # loyalty: 1 household in a, K-1 in b, K in c, none in d
    "CREATE TABLE loyalty AS SELECT 'h' || i AS hh, 'gold' AS tier "
    "FROM (VALUES (0), (5), (6), (7), (8), (10), (11), (12), (13), (14)) t(i)",
    "CREATE TABLE regions AS SELECT * FROM (VALUES ('a', 'Alpha'), ('b', 'Beta'), ('c', 'Gamma'), "
    "('d', 'Delta'), ('e', 'Epsilon')) t(region, name)",
    "CREATE TABLE secret AS SELECT 'h' || i AS hh, 'x' AS tag FROM range(10) t(i)",
]
VISIT_COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension"},
    "spend": {"role": "measure", "bounds": [0, 50]},
}
WINDOWED = "SELECT region, COUNT(DISTINCT hh) AS n, RANK() OVER (ORDER BY region) AS r FROM visits GROUP BY region"
TEMPLATES = {
    "ranked": {"sql": WINDOWED},
    "ranked_having": {"sql": WINDOWED + " HAVING COUNT(*) > 0"},
    "qualified": {"sql": "SELECT region, COUNT(DISTINCT hh) AS n FROM visits GROUP BY region "
                         "QUALIFY RANK() OVER (ORDER BY region) <= 10"},
    "raw_sum": {"sql": "SELECT region, SUM(spend) AS s FROM visits GROUP BY region ORDER BY region"},
    "strict": {"sql": "SELECT region, COUNT(*) AS n FROM visits GROUP BY region", "min_group_size": 6},
    # a CTE named like a policy table is the CTE, not the table
    "shadow": {"sql": "WITH regions AS (SELECT hh, region FROM visits WHERE region IN ('a', 'e')) "
                      "SELECT region, COUNT(DISTINCT hh) AS n FROM regions GROUP BY region"},
}


def k_policy() -> dict:
    tables = {
        "visits": private_table("visits", VISIT_COLUMNS),
        "loyalty": private_table("loyalty", {"hh": {"role": "join_key"}, "tier": {"role": "dimension"}}, owner="b"),
        "regions": {"owner": "a", "source": "room", "relation": "regions", "public": True, "keys": ["region"],
                    "columns": {"region": {"role": "dimension"}, "name": {"role": "dimension"}}},
        "secret": private_table("secret", {"hh": {"role": "join_key"}, "tag": {"role": "dimension"}}, owner="b",
                                min_group_size=7),
    }
    return {
        "cleanroom": "room",
        "min_group_size": K,
        "collaborators": {"a": {}, "b": {}},
        "tables": tables,
        "rules": {
            "narrow": {"tables": ["visits"], "aggregates": ["avg", "count"], "min_group_size": 6},
            "solo": {"tables": ["secret"], "aggregates": ["count"]},
            "agg": {
                "tables": ["visits", "loyalty", "regions"],
                "aggregates": ["count", "count_distinct", "sum", "median"],
                "joins": [["visits.hh", "loyalty.hh"], ["visits.region", "regions.region"]],
            },
        },
        "analysts": {
            "ana": {"collaborator": "a", "rules": ["agg", "narrow", "solo"], "templates": list(TEMPLATES)},
            "tpl": {"collaborator": "b", "rules": [], "templates": ["ranked"]},
        },
        "templates": TEMPLATES,
    }


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    engine = build_engine(tmp_path_factory.mktemp("k-units"), k_policy(), VISITS)
    yield engine
    engine.close()


def request(sql=None, template=None, params=None, user="ana"):
    return QueryRequest(user=user, cleanroom="room", sql=sql, template=template,
                        params=params if params is not None else ({} if template else ()))


def rows(engine, sql=None, template=None, params=None):
    return engine.run(request(sql, template, params)).table.to_pylist()


def refusal(engine, sql, user="ana", params=None) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        engine.compile(request(sql, user=user, params=params))
    return raised.value


def generated(engine, sql=None, template=None):
    return engine.compile(request(sql, template)).generated_sql


# -- the k test -------------------------------------------------------------------


def test_exactly_k_units_pass_and_k_minus_one_do_not(room):
    assert rows(room, "SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region") == [
        {"region": r, "n": 10} for r in "abcd"]
    assert rows(room, "SELECT count(*) AS n FROM visits WHERE region = 'e'") == []
    assert rows(room, "SELECT count(*) AS n FROM visits WHERE region = 'd'") == [{"n": 10}]


def test_outer_join_optional_side_with_1_or_k_minus_1_units_is_suppressed_0_or_k_released(room):
    # a: 1 loyalty household, b: K-1, c: K, d: none, e: K-1 visits households
    sql = ("SELECT v.region, count(DISTINCT l.hh) AS n FROM visits v LEFT JOIN loyalty l ON v.hh = l.hh "
           "GROUP BY v.region ORDER BY v.region")
    assert rows(room, sql) == [{"region": "c", "n": 5}, {"region": "d", "n": 0}]


def test_outer_join_k_test_is_a_range_from_1_to_k_minus_1(room):
    sql = generated(room, "SELECT v.region, count(*) FROM visits v LEFT JOIN loyalty l ON v.hh = l.hh GROUP BY v.region")
    assert 'NOT COUNT(DISTINCT "l"."hh") BETWEEN 1 AND 4' in sql
    assert 'COUNT(DISTINCT "v"."hh") >= 5' in sql


def test_right_join_makes_the_left_side_optional(room):
    sql = generated(room, "SELECT l.tier, count(*) FROM visits v RIGHT JOIN loyalty l ON v.hh = l.hh GROUP BY l.tier")
    assert 'COUNT(DISTINCT "l"."hh") >= 5' in sql and 'NOT COUNT(DISTINCT "v"."hh") BETWEEN 1 AND 4' in sql
    assert rows(room, "SELECT l.tier, count(*) AS n FROM visits v RIGHT JOIN loyalty l ON v.hh = l.hh "
                      "GROUP BY l.tier") == [{"tier": "gold", "n": 20}]


def test_inner_join_needs_k_units_on_both_sides(room):
    sql = ("SELECT v.region, count(*) AS n FROM visits v JOIN loyalty l ON v.hh = l.hh GROUP BY v.region "
           "ORDER BY v.region")
    assert rows(room, sql) == [{"region": "c", "n": 10}]


def test_rows_without_a_unit_are_never_counted(room):
    assert rows(room, "SELECT count(*) AS n, sum(spend) AS s FROM visits WHERE region = 'c'") == [
        {"n": 10, "s": 2 * (30 + 33 + 36 + 39 + 42)}]


def test_suppressed_groups_are_counted_and_kept_rows_come_first(room):
    def run(sql):
        release = room.run(request(sql))
        return release.table.to_pylist(), room.context.audit.records()[-1]["rows_suppressed"]

    assert run("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region DESC") == (
        [{"region": r, "n": 10} for r in "dcba"], 1)
    # e sorts first; LIMIT applies to released rows only
    assert run("SELECT region FROM visits GROUP BY region ORDER BY region DESC LIMIT 1") == ([{"region": "d"}], 1)
    assert run("SELECT region FROM visits GROUP BY region ORDER BY region DESC LIMIT 1 OFFSET 1") == (
        [{"region": "c"}], 1)
    # the only group is below k: nothing released, the count survives
    assert run("SELECT count(*) AS n FROM visits WHERE region = 'e'") == ([], 1)
    assert run("SELECT count(*) AS n FROM visits v JOIN loyalty l ON v.hh = l.hh WHERE v.region = 'b'") == ([], 1)
    assert run("SELECT region, count(*) AS n FROM visits WHERE region IN ('a', 'b') GROUP BY region "
               "ORDER BY region") == ([{"region": "a", "n": 10}, {"region": "b", "n": 10}], 0)


def test_bookkeeping_columns_are_appended_and_sorted_first(room):
    sql = generated(room, "SELECT region, count(*) FROM visits GROUP BY region ORDER BY region")
    # kept rows (the 3rd column) first, then the analyst's order (by name or position)
    assert re.search(r'QUALIFY COUNT\(DISTINCT "visits"."hh"\) >= 5 OR ROW_NUMBER\(\) OVER \(\) = 1 '
                     r'ORDER BY 3 DESC, ("region"|1|"visits"."region") ASC$', sql), sql
    assert 'SUM(CASE WHEN COUNT(DISTINCT "visits"."hh") >= 5 THEN 0 ELSE 1 END) OVER () AS "__suppressed"' in sql
    assert 'COUNT(DISTINCT "visits"."hh") >= 5 AS "__kept"' in sql
    assert room.compile(request("SELECT count(*) FROM visits")).counts_suppressed is True


def test_template_with_a_window_function_is_k_tested_in_having(room):
    state = room.compile(request(template="ranked"))
    assert state.generated_sql.endswith('GROUP BY "visits"."region" HAVING COUNT(DISTINCT "visits"."hh") >= 5')
    assert state.counts_suppressed is False
    result = rows(room, template="ranked")
    assert [r["region"] for r in result] == ["a", "b", "c", "d"]
    assert list(result[0]) == ["region", "n", "r"]


def test_template_window_k_test_is_anded_with_its_own_having(room):
    sql = generated(room, template="ranked_having")
    assert sql.endswith('HAVING (COUNT(*) > 0) AND COUNT(DISTINCT "visits"."hh") >= 5')
    assert [r["region"] for r in rows(room, template="ranked_having")] == ["a", "b", "c", "d"]


def test_template_with_qualify_is_k_tested_in_having(room):
    sql = generated(room, template="qualified")
    assert 'HAVING COUNT(DISTINCT "visits"."hh") >= 5 QUALIFY' in sql and "__kept" not in sql
    assert [r["region"] for r in rows(room, template="qualified")] == ["a", "b", "c", "d"]


def test_template_k_is_the_strictest_and_templates_are_not_clamped(room):
    release = room.run(request(template="strict"))
    assert release.min_group_size == 6 and release.authorised_by == "template:strict"
    assert release.table.num_rows == 0
    # a template is trusted SQL: its measures are not clamped (ad-hoc ones are)
    raw = rows(room, template="raw_sum")
    assert raw[3] == {"region": "d", "s": 2 * sum(3 * i for i in range(15, 20))}
    clamped = rows(room, "SELECT region, sum(spend) AS s FROM visits GROUP BY region ORDER BY region")
    assert clamped[3] == {"region": "d", "s": 2 * (45 + 48 + 50 + 50 + 50)}


# -- which rule authorises, and its k ---------------------------------------------


def test_the_first_rule_that_allows_the_query_authorises_it_with_its_k(room):
    by_narrow = room.run(request("SELECT avg(spend) AS a FROM visits"))
    assert (by_narrow.authorised_by, by_narrow.min_group_size) == ("rule:narrow", 6)
    assert rows(room, "SELECT region, avg(spend) AS a FROM visits GROUP BY region") == []  # 5 < 6
    by_agg = room.run(request("SELECT sum(spend) AS s FROM visits"))
    assert (by_agg.authorised_by, by_agg.min_group_size) == ("rule:agg", 5)
    state = room.compile(request("SELECT v.region, count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh "
                                 "GROUP BY v.region"))
    assert state.authorisation.authorised_by == "rule:agg"


def test_when_every_rule_refuses_the_first_refusal_is_reported(room):
    error = refusal(room, "SELECT max(spend) FROM visits")
    assert error.rule == "aggregate.not_allowed"
    assert "MAX is not allowed by rule agg" in str(error)
    assert error.hint == "allowed aggregates: count, count_distinct, median, sum"


def test_tables_no_one_rule_covers_together_are_refused_with_the_rules_listed(room):
    assert room.compile(request("SELECT count(*) FROM secret")).authorisation.authorised_by == "rule:solo"
    error = refusal(room, "SELECT count(*) FROM visits v JOIN secret s ON v.hh = s.hh")
    assert error.rule == "rule.no_rule_for_tables" and "secret, visits together" in str(error)
    assert error.hint == "rule agg covers visits, loyalty, regions; rule narrow covers visits; rule solo covers secret"
    by_solo = room.compile(request("SELECT count(*) FROM secret"))
    assert by_solo.authorisation.min_group_size == 7  # the table's own k is the strictest


def test_public_tables_need_no_rule_and_no_k(room):
    state = room.compile(request("SELECT region, name FROM regions ORDER BY region"))
    assert state.authorisation.authorised_by == "public" and state.authorisation.min_group_size is None
    assert "QUALIFY" not in state.generated_sql and "COUNT(DISTINCT" not in state.generated_sql
    assert rows(room, "SELECT region, name FROM regions ORDER BY region")[0] == {"region": "a", "name": "Alpha"}
    release = room.run(request("SELECT r.name, count(*) AS n FROM visits v JOIN regions r ON v.region = r.region "
                               "GROUP BY r.name ORDER BY r.name"))
    assert release.authorised_by == "rule:agg"
    assert [r["name"] for r in release.table.to_pylist()] == ["Alpha", "Beta", "Delta", "Gamma"]


# -- joins ------------------------------------------------------------------------


@pytest.mark.parametrize("join", ["SEMI JOIN", "ANTI JOIN", "ASOF JOIN", "LEFT SEMI JOIN", "LEFT ANTI JOIN"])
def test_semi_anti_and_asof_joins_are_refused(room, join):
    error = refusal(room, f"SELECT count(*) FROM visits v {join} loyalty l ON v.hh = l.hh")
    assert error.rule == "join.kind"


def test_a_join_whose_on_does_not_touch_the_joined_table_is_a_cross_join(room):
    error = refusal(room, "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh "
                          "JOIN visits w ON v.hh = l.hh")
    assert error.rule == "join.cross" and "w is joined on nothing of its own" in str(error)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM visits v CROSS JOIN loyalty l",
    "SELECT count(*) FROM visits v, loyalty l",
])
def test_cross_joins_are_refused(room, sql):
    assert refusal(room, sql).rule == "join.cross"


@pytest.mark.parametrize("on", [
    "v.hh = v.hh",  # one table on both sides
    "v.region = l.tier",  # not a declared pair
    "v.hh < l.hh",  # not an equality
    "v.hh = 'h1'",  # not two columns
    "v.hh = l.hh OR v.hh = l.hh",
])
def test_undeclared_join_conditions_are_refused(room, on):
    assert refusal(room, f"SELECT count(*) FROM visits v JOIN loyalty l ON {on}").rule == "join.undeclared"


@pytest.mark.parametrize("join", ["JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN", "FULL OUTER JOIN"])
def test_declared_joins_of_every_allowed_kind_compile(room, join):
    state = room.compile(request(f"SELECT count(*) FROM visits v {join} loyalty l ON l.hh = v.hh AND v.hh = l.hh"))
    assert state.authorisation.authorised_by == "rule:agg"


# -- the aggregation rule ---------------------------------------------------------


REFUSED = [
    ("SELECT region FROM visits", "query.not_aggregated"),
    ("SELECT spend FROM visits", "query.not_aggregated"),
    ("SELECT count(*) FROM visits WHERE spend > 10", "where.measure"),
    ("SELECT count(*) FROM visits WHERE hh = 'h1'", "column.join_key_in_where"),
    ("SELECT spend, count(*) FROM visits GROUP BY spend", "group_by.measure"),
    ("SELECT hh, count(*) FROM visits GROUP BY hh", "column.join_key_in_group_by"),
    ("SELECT count(*) FILTER (WHERE spend > 10) FROM visits", "filter.measure"),
    ("SELECT count(*) FILTER (WHERE hh = 'h1') FROM visits", "column.join_key_in_filter"),
    ("SELECT region, spend, count(*) FROM visits GROUP BY region", "column.raw_measure"),
    ("SELECT region, hh, count(*) FROM visits GROUP BY region", "column.raw_join_key"),
    ("SELECT region, count(*) FROM visits GROUP BY region HAVING sum(spend) > 1 AND spend > 1", "column.raw_measure"),
    ("SELECT region, count(*) FROM visits GROUP BY region ORDER BY hh", "column.raw_join_key"),
    ("SELECT v.region, count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh GROUP BY v.region ORDER BY l.tier",
     "query.ungrouped_column"),
    ("SELECT count(hh) FROM visits", "column.join_key_in_aggregate"),
    ("SELECT count(DISTINCT lower(hh)) FROM visits", "column.join_key_in_aggregate"),
    ("SELECT sum(DISTINCT spend) FROM visits", "aggregate.not_allowed"),
    ("SELECT count(DISTINCT region, hh) FROM visits", "aggregate.not_allowed"),
    ("SELECT min(spend) FROM visits", "aggregate.not_allowed"),
]


@pytest.mark.parametrize("sql, rule", REFUSED, ids=[f"{r}-{i}" for i, (_, r) in enumerate(REFUSED)])
def test_the_aggregation_rule_refuses(room, sql, rule):
    assert refusal(room, sql).rule == rule


ALLOWED = [
    "SELECT region FROM visits GROUP BY region",  # grouped, no aggregate
    "SELECT count(*) FROM visits",  # aggregate, no GROUP BY
    "SELECT count(DISTINCT hh) FROM visits",
    "SELECT lower(region) AS r, count(*) FROM visits GROUP BY lower(region)",
    "SELECT region, count(*) AS n FROM visits GROUP BY region HAVING n > 1 ORDER BY n",
    "SELECT region, count(*) FILTER (WHERE region <> 'x') FROM visits GROUP BY region",
    "SELECT region, count(*) FROM visits WHERE region IN ('a', 'b') GROUP BY region LIMIT 2 OFFSET 1",
    "SELECT region, median(spend) FROM visits GROUP BY region",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_the_aggregation_rule_allows(room, sql):
    assert room.compile(request(sql)).authorisation.authorised_by == "rule:agg"


@pytest.mark.parametrize("sql, params", [
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT $1", ("x",)),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT 'x'", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT 1 + 1", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT 1.5", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT ALL", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region OFFSET 1 + 1", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT 2 OFFSET 'x'", ()),
    ("SELECT region, count(*) FROM visits GROUP BY region LIMIT 2 OFFSET $1", ("y",)),
])
def test_limit_and_offset_must_be_whole_number_literals(room, sql, params):
    assert refusal(room, sql, params=params).rule == "query.limit"


def test_limit_and_offset_parameters_that_are_whole_numbers_are_allowed(room):
    sql = "SELECT region FROM visits GROUP BY region ORDER BY region LIMIT $1 OFFSET $2"
    assert rows(room, sql, params=(2, 1)) == [{"region": "b"}, {"region": "c"}]


# -- the rest of the rewrite ------------------------------------------------------


def test_ad_hoc_measures_are_clamped_null_kept(room):
    sql = generated(room, "SELECT sum(spend) FROM visits")
    assert ('CASE WHEN "visits"."spend" IS NULL THEN NULL ELSE LEAST(GREATEST("visits"."spend", 0.0), 50.0) END'
            in sql)
    assert rows(room, "SELECT sum(spend) AS s FROM visits WHERE region = 'd'") == [{"s": 2 * (45 + 48 + 50 + 50 + 50)}]


def test_casts_become_try_casts_and_quantiles_interpolate(room):
    assert "TRY_CAST" in generated(room, "SELECT count(*) FROM visits WHERE CAST(region AS INT) > 1")
    assert rows(room, "SELECT CAST('x' AS INT) AS v") == [{"v": None}]
    sql = generated(room, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY spend) FROM visits")
    assert "quantile_cont(" in sql.lower()


def test_constant_statements_are_marked_and_others_not(room):
    assert room.compile(request("SELECT 1 + 2 AS x, 'a' || 'b' AS y")).constant is True
    assert room.compile(request("SELECT abs(-1) AS x")).constant is False
    assert room.compile(request("SELECT region FROM regions")).constant is False


def test_tables_point_at_their_sources(room):
    sql = generated(room, "SELECT r.name, count(*) FROM visits v JOIN regions r ON v.region = r.region GROUP BY r.name")
    assert '(SELECT * FROM "src_room"."main"."visits" WHERE NOT "hh" IS NULL) AS "v"' in sql
    assert '"src_room"."main"."regions" AS "r"' in sql


def test_template_ctes_are_not_pointed_at_sources(room):
    assert rows(room, template="shadow") == [{"region": "a", "n": 5}]  # e has K-1 households


# -- differential privacy: the plan and the bounding query --------------------------

DP_COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": ["a", "b"]},
    "day": {"role": "dimension"},
    "spend": {"role": "measure", "bounds": [10, 30]},
    "size": {"role": "dimension"},  # a number, but no measure: no bounds
    # public keys whose grids hold 100 x 100 = 10,000 and 73 x 137 = 10,001 combinations
    "c100a": {"role": "dimension", "values": [str(i) for i in range(100)]},
    "c100b": {"role": "dimension", "values": [str(i) for i in range(100)]},
    "c73": {"role": "dimension", "values": [str(i) for i in range(73)]},
    "c137": {"role": "dimension", "values": [str(i) for i in range(137)]},
}
DP_ROWS = [
    # 40 households, 20 per region, 6 rows each (over max_rows_per_unit 3) spread over 3 days
    # (over max_groups_per_unit 2); spend 0..39 around the bounds [10, 30]
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, ['a', 'b'][1 + i % 2] AS region, 'd' || (j % 3) AS day, "
    "i AS spend, i % 4 AS size, '1' AS c100a, '2' AS c100b, '3' AS c73, '4' AS c137 FROM range(40) t(i), range(6) r(j)",
    "CREATE TABLE loyalty AS SELECT 'h' || i AS hh, 'r' || i AS ref, 'gold' AS tier FROM range(30) t(i)",
    "CREATE TABLE regions AS SELECT * FROM (VALUES ('a', 'Alpha'), ('b', 'Beta')) t(region, name)",
]
MAX_ROWS, MAX_GROUPS = 3, 2
DP_TEMPLATES = {
    "per_unit": {
        "sql": "WITH per_hh AS (SELECT hh, region, SUM(spend) AS total FROM visits GROUP BY hh, region) "
               "SELECT region, AVG(total) AS a, COUNT(*) AS n FROM per_hh GROUP BY region",
        "bounds": {"total": [0, 100]},
    },
    "computed_key": {
        "sql": "WITH t AS (SELECT hh, upper(region) AS r FROM visits) SELECT r, COUNT(*) AS n FROM t GROUP BY r",
    },
    # templates skip the aggregation rule: the DP plan itself refuses what is neither grouped nor aggregated
    "ungrouped": {"sql": "SELECT region, day, COUNT(*) AS n FROM visits GROUP BY region"},
    "across": {
        "sql": "WITH r AS (SELECT region, COUNT(*) AS n FROM visits GROUP BY region) "
               "SELECT v.region, COUNT(*) AS c FROM visits v JOIN r ON v.region = r.region GROUP BY v.region",
    },
}


def dp_policy() -> dict:
    policy = k_policy()
    policy["tables"] = {
        "visits": private_table("visits", DP_COLUMNS),
        "loyalty": private_table("loyalty", {"hh": {"role": "join_key"}, "ref": {"role": "join_key"},
                                             "tier": {"role": "dimension"}}, owner="b"),
        "regions": policy["tables"]["regions"],
    }
    policy["rules"] = {"agg": {
        "tables": ["visits", "loyalty", "regions"],
        "aggregates": ["count", "count_distinct", "sum", "avg", "median", "min"],
        "joins": [["visits.hh", "loyalty.hh"], ["visits.hh", "loyalty.ref"], ["visits.region", "regions.region"]],
    }}
    policy["analysts"] = {"ana": {"collaborator": "a", "rules": ["agg"], "templates": list(DP_TEMPLATES)}}
    policy["templates"] = DP_TEMPLATES
    policy["privacy"] = {"epsilon_per_query": 1.0, "delta_per_query": 1e-6, "max_rows_per_unit": MAX_ROWS,
                         "max_groups_per_unit": MAX_GROUPS, "budget": {"epsilon": 1000.0, "delta": 0.001}}
    return policy


@pytest.fixture(scope="module")
def dp_room(tmp_path_factory):
    engine = build_engine(tmp_path_factory.mktemp("dp-units"), dp_policy(), DP_ROWS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def dp_cleanroom(tmp_path_factory):
    """The DP room's policy alone (no engine, no DuckDB): for the pure checks."""
    import yaml

    from gateway.policy.loader import load_policy

    path = tmp_path_factory.mktemp("dp-policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(dp_policy(), sort_keys=False))
    return load_policy(path)


def noise(engine, sql):
    explained = engine.explain(request(sql))["differential_privacy"]
    return [(a["aggregate"], [n["sensitivity"] for n in a["noise"]]) for a in explained["aggregates"]]


def bounded_rows(engine, sql=None, template=None):
    state = engine.compile(request(sql, template))
    table = engine.database.cursor().sql(state.generated_sql).to_arrow_table()
    return state, table.to_pylist()


def plan_of(engine, sql=None, template=None):
    return engine.compile(request(sql, template)).noise_plan


def kinds(plan):
    return [(q.kind.value, q.value, q.alpha) for q in plan.quantities]


def test_dp_avg_is_centred_on_the_midpoint_of_its_bounds(dp_room):
    state = dp_room.compile(request("SELECT region, avg(spend) AS a FROM visits GROUP BY region"))
    centred = [q for q in state.noise_plan.quantities if q.kind.value == "centered_sum"]
    assert len(centred) == 1 and centred[0].midpoint == 20.0
    assert (centred[0].bounds.lower, centred[0].bounds.upper) == (10.0, 30.0)
    assert 'SUM(("__v0" - 20.0)) AS "__q0_s"' in state.generated_sql
    assert "LEAST(GREATEST(\"visits\".\"spend\", 10.0), 30.0)" in state.generated_sql


def test_dp_sensitivities_and_epsilon_shares_follow_the_plan(dp_room):
    per_unit = MAX_ROWS * MAX_GROUPS
    assert noise(dp_room, "SELECT region, count(*), count(DISTINCT hh), sum(spend), avg(spend) FROM visits "
                          "GROUP BY region") == [
        ("count", [per_unit]), ("count_distinct", [MAX_GROUPS]), ("sum", [per_unit * 30.0]),
        ("avg", [per_unit * 10.0, per_unit])]
    # no GROUP BY: one group per unit
    assert noise(dp_room, "SELECT count(*), sum(spend) FROM visits") == [("count", [MAX_ROWS]), ("sum", [MAX_ROWS * 30.0])]
    assert noise(dp_room, "SELECT region, median(spend) FROM visits GROUP BY region") == [("median", [MAX_ROWS])]
    plan = plan_of(dp_room, "SELECT region, count(*), sum(spend) FROM visits GROUP BY region")
    assert [q.share for q in plan.quantities] == [pytest.approx(1 / 3)] * 3  # units, rows, sum
    assert plan.groups_per_unit == MAX_GROUPS and plan_of(dp_room, "SELECT count(*) FROM visits").groups_per_unit == 1


def test_dp_quantities_are_shared_and_values_reused(dp_room):
    plan = plan_of(dp_room, "SELECT region, avg(spend), sum(spend), median(spend), "
                            "percentile_cont(0.5) WITHIN GROUP (ORDER BY spend), "
                            "percentile_cont(0.25) WITHIN GROUP (ORDER BY spend), count(spend), count(*) "
                            "FROM visits GROUP BY region")
    assert kinds(plan) == [("units", None, None), ("centered_sum", "__v0", None), ("rows", "__v0", None),
                           ("sum", "__v0", None), ("quantile", "__v0", 0.5), ("quantile", "__v0", 0.25),
                           ("rows", "__v1", None), ("rows", None, None)]
    assert [(o.aggregate, o.quantities) for o in plan.outputs] == [
        ("avg", ("__q0", "__q1")), ("sum", ("__q2",)), ("median", ("__q3",)), ("percentile_cont", ("__q3",)),
        ("percentile_cont", ("__q4",)), ("count", ("__q5",)), ("count", ("__q6",))]  # one quantity, named as written
    rows = plan.rows.sql(dialect="duckdb")
    assert '"visits"."hh" AS "__unit", "visits"."region" AS "__g0", CASE WHEN' in rows
    assert '"visits"."spend" AS "__v1"' in rows and "WHERE \"visits\".\"region\" IN ('a', 'b')" in rows


def test_dp_filters_become_case_values(dp_room):
    plan = plan_of(dp_room, "SELECT region, count(*) FILTER (WHERE day = 'd0'), sum(spend) FILTER (WHERE day = 'd1') "
                            "FROM visits GROUP BY region")
    assert kinds(plan) == [("units", None, None), ("rows", "__v0", None), ("sum", "__v1", None)]
    rows = plan.rows.sql(dialect="duckdb")
    assert "CASE WHEN \"visits\".\"day\" = 'd0' THEN 1 END AS \"__v0\"" in rows
    assert "CASE WHEN \"visits\".\"day\" = 'd1' THEN CASE WHEN" in rows


@pytest.mark.parametrize("sql, bounds", [
    ("sum(spend)", (10.0, 30.0)),
    ("sum(CAST(spend AS DOUBLE))", (10.0, 30.0)),
    ("sum((spend))", (10.0, 30.0)),
    ("sum(CASE WHEN day = 'd0' THEN spend ELSE 0 END)", (0.0, 30.0)),
    ("sum(CASE WHEN day = 'd0' THEN spend ELSE -50 END)", (-50.0, 30.0)),
    ("sum(CASE WHEN day = 'd0' THEN spend END)", (10.0, 30.0)),
    ("sum(CASE WHEN day = 'd0' THEN spend ELSE NULL END)", (10.0, 30.0)),
    ("sum(CASE WHEN day = 'd0' THEN 40 WHEN day = 'd1' THEN spend ELSE 0 END)", (0.0, 40.0)),
    ("sum(2)", (2.0, 2.0)),
    ("sum(spend * 2)", (20.0, 60.0)),
])
def test_dp_bounds_of_what_is_summed(dp_room, sql, bounds):
    plan = plan_of(dp_room, f"SELECT {sql} AS s FROM visits")
    assert (plan.quantities[1].bounds.lower, plan.quantities[1].bounds.upper) == bounds


@pytest.mark.parametrize("sql, rule", [
    ("SELECT sum(CASE WHEN day = 'd0' THEN spend ELSE length(day) END) FROM visits", "dp.unbounded_measure"),
    ("SELECT sum(CASE day WHEN 'd0' THEN spend ELSE 0 END) FROM visits", "dp.unbounded_measure"),
    ("SELECT sum(length(day)) FROM visits", "dp.unbounded_measure"),
    ("SELECT sum(size) FROM visits", "dp.unbounded_measure"),
    ("SELECT sum(spend / spend) FROM visits", "dp.unbounded_measure"),
    ("SELECT count(DISTINCT region) FROM visits", "dp.count_distinct"),
    ("SELECT count(DISTINCT hh) FILTER (WHERE day = 'd0') FROM visits", "dp.count_distinct"),
    ("SELECT min(spend) FROM visits", "dp.aggregate"),
    ("SELECT c100a, c73, c137, count(*) FROM visits GROUP BY c100a, c73, c137", "dp.too_many_groups"),
    ("SELECT c73, c137, count(*) FROM visits GROUP BY c73, c137", "dp.too_many_groups"),  # 10,001
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.ref", "dp.join_not_on_unit"),
])
def test_dp_refusals(dp_room, sql, rule):
    assert refusal(dp_room, sql).rule == rule


def test_dp_public_grid_of_exactly_the_maximum_is_allowed(dp_room):
    plan = plan_of(dp_room, "SELECT c100a, c100b, count(*) FROM visits GROUP BY c100a, c100b")  # 10,000
    assert plan.public_keys and len(plan.groups) == 2


def test_dp_count_distinct_of_the_unit_is_the_unit_count(dp_room):
    plan = plan_of(dp_room, "SELECT region, count(DISTINCT hh) FROM visits GROUP BY region")
    assert [o.quantities for o in plan.outputs] == [("__units",)] and kinds(plan) == [("units", None, None)]
    plan = plan_of(dp_room, "SELECT count(DISTINCT v.hh) FROM visits v JOIN loyalty l ON v.hh = l.hh")
    assert [o.aggregate for o in plan.outputs] == ["count_distinct"] and plan.epsilon == 1.0


def test_dp_unit_of_outer_joins(dp_room):
    def unit(join):
        rows = plan_of(dp_room, f"SELECT count(*) FROM visits v {join} loyalty l ON v.hh = l.hh").rows
        return rows.expressions[0].sql(dialect="duckdb")

    assert unit("JOIN") == '"l"."hh" AS "__unit"'  # both required: the first table's (by name)
    assert unit("LEFT JOIN") == '"v"."hh" AS "__unit"'
    assert unit("RIGHT JOIN") == '"l"."hh" AS "__unit"'
    assert unit("FULL JOIN") == 'COALESCE("l"."hh", "v"."hh") AS "__unit"'


def test_dp_key_filter_keeps_the_public_key_conditions_only(dp_room):
    plan = plan_of(dp_room, "SELECT region, count(*) FROM visits WHERE region = 'a' AND day = 'd0' GROUP BY region")
    assert plan.key_filter == '"__g0" = \'a\''
    plan = plan_of(dp_room, "SELECT region, day, count(*) FROM visits WHERE region = 'a' GROUP BY region, day")
    assert plan.key_filter is None  # private keys: no grid
    plan = plan_of(dp_room, "SELECT region, c73, count(*) FROM visits WHERE region = 'a' AND c73 <> '0' "
                            "AND day = 'd1' GROUP BY region, c73")
    assert plan.key_filter == '"__g0" = \'a\' AND "__g1" <> \'0\''
    assert plan_of(dp_room, "SELECT region, count(*) FROM visits GROUP BY region").key_filter is None
    assert plan_of(dp_room, "SELECT region, count(*) FROM visits WHERE region <> day GROUP BY region").key_filter is None


def test_dp_post_query_reads_only_noisy_columns(dp_room):
    plan = plan_of(dp_room, "SELECT region, count(*) AS n FROM visits GROUP BY region HAVING count(*) > 5 "
                            "ORDER BY n DESC LIMIT 1")
    assert re.fullmatch(r'SELECT "__g0" AS "region", "__a0" AS "n" FROM __released WHERE "__a0" > 5 '
                        r'ORDER BY ("n"|2|"__a0") DESC NULLS FIRST LIMIT 1', plan.post_sql), plan.post_sql
    assert plan.released_from == (("region", "__g0"), ("n", "__a0"))
    plan = plan_of(dp_room, "SELECT upper(region) AS r, count(*) + 1 AS n FROM visits GROUP BY region")
    assert plan.post_sql == ('SELECT UPPER("__g0") AS "r", TRY_CAST("__a0" AS BIGINT) + TRY_CAST(1 AS BIGINT) AS "n" '
                             'FROM __released')
    assert plan.released_from == (("r", None), ("n", None))


def test_dp_template_bounds_and_ctes(dp_room):
    plan = plan_of(dp_room, template="per_unit")
    assert kinds(plan)[:2] == [("units", None, None), ("centered_sum", "__v0", None)]
    assert (plan.quantities[1].bounds.lower, plan.quantities[1].bounds.upper) == (0.0, 100.0)
    assert plan.groups[0].values == ("a", "b")  # region passes through the CTE unchanged: public
    state, result = bounded_rows(dp_room, template="per_unit")
    assert 'WITH "per_hh" AS (' in state.generated_sql and {r["__g0"] for r in result} == {"a", "b"}
    with pytest.raises(GatewayError) as raised:
        dp_room.compile(request(template="across"))
    assert raised.value.rule == "dp.aggregate_across_units"
    assert plan_of(dp_room, template="computed_key").groups[0].values is None  # computed in the CTE: private keys
    with pytest.raises(GatewayError) as raised:
        dp_room.compile(request(template="ungrouped"))
    assert (raised.value.rule, raised.value.message) == (
        "query.ungrouped_column", '"visits"."day" is neither grouped nor aggregated')


def test_dp_bounded_quantities_per_public_group(dp_room):
    state, result = bounded_rows(dp_room, "SELECT region, count(*), count(DISTINCT hh), sum(spend) FROM visits "
                                          "GROUP BY region")
    names = {q.column: q.kind.value for q in state.noise_plan.quantities}
    got = {r["__g0"]: {names.get(k, k): v for k, v in r.items()} for r in result}
    # every unit is in one region (<= MAX_GROUPS), 6 rows each counted as MAX_ROWS
    assert got["a"]["units"] == 20 and got["a"]["rows"] == 20 * MAX_ROWS
    clamped = [min(max(i, 10), 30) for i in range(0, 40, 2)]
    assert got["a"]["sum"] == pytest.approx(sum(v * MAX_ROWS for v in clamped))


def test_dp_empty_public_keys_get_zeros(dp_room):
    _, result = bounded_rows(dp_room, "SELECT region, count(*), sum(spend), median(spend) FROM visits "
                                      "WHERE day = 'none' GROUP BY region")
    assert sorted(result, key=lambda r: r["__g0"]) == [{"__g0": "a", "__units": 0, "__q0": 0, "__q1": 0.0, "__q2": []},
                                                       {"__g0": "b", "__units": 0, "__q0": 0, "__q1": 0.0, "__q2": []}]


def test_dp_units_keep_at_most_max_groups(dp_room):
    # every unit is in 3 days: it keeps exactly MAX_GROUPS of them
    _, result = bounded_rows(dp_room, "SELECT day, count(*), count(DISTINCT hh) FROM visits GROUP BY day")
    assert sum(r["__units"] for r in result) == 40 * MAX_GROUPS
    assert sum(r["__q0"] for r in result) == 40 * MAX_GROUPS * 2  # 2 rows per unit and day
    _, result = bounded_rows(dp_room, "SELECT count(*), sum(spend) FROM visits")
    assert result == [{"__units": 40, "__q0": 40 * MAX_ROWS,
                       "__q1": pytest.approx(sum(min(max(i, 10), 30) * MAX_ROWS for i in range(40)))}]
    state = dp_room.compile(request("SELECT day, count(*) FROM visits GROUP BY day"))
    assert 'min("__h", 3)' in state.generated_sql and 'len(c."__low") <= 2' in state.generated_sql


def test_dp_public_keys_make_a_grid_and_private_keys_do_not(dp_room):
    public = dp_room.compile(request("SELECT region, count(*) FROM visits WHERE region = 'a' GROUP BY region"))
    assert public.noise_plan.public_keys and public.noise_plan.delta == 0.0
    assert "(VALUES ('a'), ('b'))" in public.generated_sql and "WHERE \"__g0\" = 'a'" in public.generated_sql
    private = dp_room.compile(request("SELECT day, count(*) FROM visits GROUP BY day"))
    assert not private.noise_plan.public_keys and private.noise_plan.delta == 1e-6
    assert "VALUES" not in private.generated_sql
    assert plan_of(dp_room, "SELECT lower(region), count(*) FROM visits GROUP BY lower(region)").groups[0].values is None


def test_dp_quantile_takes_at_most_max_rows_values_per_unit(dp_room):
    state, result = bounded_rows(dp_room, "SELECT region, median(spend) FROM visits GROUP BY region")
    values = {r["__g0"]: r["__q0"] for r in result}
    assert len(values["a"]) == 20 * MAX_ROWS and min(values["a"]) == 10.0 and max(values["a"]) == 30.0
    assert "list_slice(" in state.generated_sql


# -- DP stability, on the policy alone ------------------------------------------------------

STABLE = [
    "SELECT visits.region, count(*) FROM visits GROUP BY visits.region",
    "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh",
    "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh AND v.region = 'a'",
    "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh JOIN visits w ON l.hh = w.hh",
    "SELECT count(*) FROM visits v JOIN regions r ON v.region = r.region",
    "WITH t AS (SELECT visits.hh, visits.spend FROM visits) SELECT sum(t.spend) FROM t",
    "WITH t AS (SELECT visits.hh, count(*) AS n FROM visits GROUP BY visits.hh) SELECT sum(t.n) FROM t",
    "WITH t AS (SELECT visits.hh, count(*) AS n FROM visits GROUP BY visits.region, visits.hh) SELECT sum(t.n) FROM t",
    "WITH d AS (SELECT DISTINCT visits.region, visits.hh FROM visits) SELECT count(*) FROM d",
    "WITH t AS (SELECT visits.hh, row_number() OVER (PARTITION BY visits.region, visits.hh ORDER BY visits.spend) "
    "AS rn FROM visits) SELECT count(*) FROM t WHERE t.rn = 1",
    "SELECT count(*) FROM (SELECT visits.hh, row_number() OVER (PARTITION BY visits.hh) AS rn FROM visits) AS t",
    "SELECT count(*) FROM visits WHERE visits.region IN (SELECT regions.region FROM regions)",
    "WITH p AS (SELECT regions.region, count(*) AS n FROM regions GROUP BY regions.region) "
    "SELECT count(*) FROM visits v JOIN p ON v.region = p.region",
    "WITH u AS (SELECT regions.region FROM regions UNION SELECT regions.name FROM regions) "
    "SELECT count(*) FROM visits v JOIN u ON v.region = u.region",
    "WITH t AS (SELECT v.hh, l.tier FROM visits v JOIN loyalty l ON v.hh = l.hh) SELECT count(*) FROM t",
]
UNSTABLE = [
    ("SELECT visits.region FROM visits UNION SELECT visits.region FROM visits", "dp.set_operation"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.ref", "dp.join_not_on_unit"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.region = l.tier", "dp.join_not_on_unit"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = lower(l.hh)", "dp.join_not_on_unit"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh JOIN visits w ON v.region = w.region",
     "dp.join_not_on_unit"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.spend = l.hh", "dp.join_not_on_unit"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.tier", "dp.join_not_on_unit"),
    ("WITH t AS (SELECT visits.hh, row_number() OVER (ORDER BY visits.spend) AS rn FROM visits) "
     "SELECT count(*) FROM t", "dp.window"),
    ("WITH t AS (SELECT visits.hh, row_number() OVER (PARTITION BY visits.region) AS r FROM visits) "
     "SELECT count(*) FROM t", "dp.window"),
    ("WITH t AS (SELECT visits.hh, row_number() OVER (PARTITION BY lower(visits.hh)) AS r FROM visits) "
     "SELECT count(*) FROM t", "dp.window"),
    ("SELECT visits.region, count(*), rank() OVER (ORDER BY count(*)) FROM visits GROUP BY visits.region",
     "dp.window"),
    ("SELECT count(*) FROM visits WHERE visits.hh IN (SELECT loyalty.hh FROM loyalty)", "dp.subquery"),
    ("SELECT count(*) FROM visits WHERE visits.hh IN "
     "(SELECT loyalty.hh FROM loyalty JOIN regions ON loyalty.tier = regions.region)", "dp.subquery"),
    ("WITH t AS (SELECT v.hh, v.region FROM visits v JOIN regions r ON v.region = r.region) "
     "SELECT count(*) FROM t JOIN loyalty l ON t.region = l.tier", "dp.join_not_on_unit"),
    ("WITH r AS (SELECT visits.region, count(*) AS n FROM visits GROUP BY visits.region) SELECT sum(r.n) FROM r",
     "dp.aggregate_across_units"),
    ("WITH r AS (SELECT count(*) AS n FROM visits) SELECT sum(r.n) FROM r", "dp.aggregate_across_units"),
    ("WITH d AS (SELECT DISTINCT visits.region FROM visits) SELECT count(*) FROM d", "dp.aggregate_across_units"),
    ("WITH r AS (SELECT visits.hh, count(*) AS n FROM visits GROUP BY lower(visits.hh)) SELECT sum(r.n) FROM r",
     "dp.aggregate_across_units"),
    ("WITH t AS (SELECT visits.hh FROM visits LIMIT 5) SELECT count(*) FROM t", "dp.inner_limit"),
    ("WITH t AS (SELECT visits.hh FROM visits OFFSET 5) SELECT count(*) FROM t", "dp.inner_limit"),
]


@pytest.mark.parametrize("sql", STABLE)
def test_dp_stable_shapes(dp_cleanroom, sql):
    from gateway.dp.stability import check_stable

    check_stable(sqlglot.parse_one(sql, read="postgres"), dp_cleanroom)


@pytest.mark.parametrize("sql, rule", UNSTABLE, ids=[f"{r}-{i}" for i, (_, r) in enumerate(UNSTABLE)])
def test_dp_unstable_shapes(dp_cleanroom, sql, rule):
    from gateway.dp.stability import check_stable

    with pytest.raises(Refused) as raised:
        check_stable(sqlglot.parse_one(sql, read="postgres"), dp_cleanroom)
    assert raised.value.rule == rule


def test_dp_carries_private(dp_cleanroom):
    from sqlglot.optimizer.scope import build_scope

    from gateway.dp.stability import carries_private

    scope = build_scope(sqlglot.parse_one(
        "WITH t AS (SELECT hh FROM visits), p AS (SELECT region FROM regions), "
        "m AS (SELECT r.region FROM regions r JOIN visits v ON r.region = v.region) SELECT 1 FROM t, p, m, nowhere"))
    sources = {alias: source for alias, (_, source) in scope.selected_sources.items()}
    assert [carries_private(sources[a], dp_cleanroom) for a in ("t", "p", "m", "nowhere")] == [True, False, True, False]


# -- defence in depth: authorise and rewrite on trees the resolver would not produce ----


BASE = "SELECT region, count(*) FROM visits GROUP BY region"
BASE_JOIN = "SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh"


def state_before(engine, sql, step, user="ana"):
    """The state every compile pass before `step` leaves for an accepted statement."""
    passes = pipeline.COMPILE[:pipeline.COMPILE.index(step)]
    return pipeline.run(engine._start(request(sql, user=user)), passes)


def authorise_crafted(engine, crafted, base=BASE, **changes):
    state = state_before(engine, base, authorise_pass.authorise)
    tree = sqlglot.parse_one(crafted, read="postgres")
    return authorise_pass.authorise(state.evolve(tree=tree, **changes))


def crafted_refusal(engine, crafted, base=BASE, **changes) -> Refused:
    with pytest.raises(Refused) as raised:
        authorise_crafted(engine, crafted, base, **changes)
    return raised.value


CRAFTED = [
    ("WITH RECURSIVE r AS (SELECT 1) SELECT visits.region, count(*) FROM visits GROUP BY visits.region",
     BASE, "query.recursive_cte", "recursive CTEs are not allowed"),
    ("WITH r AS (SELECT 1 AS x) SELECT visits.region, count(*) FROM visits GROUP BY visits.region",
     BASE, "query.subquery", "subqueries and CTEs"),
    ("SELECT visits.region, count(*) FROM visits WHERE visits.region IN (SELECT 'a') GROUP BY visits.region",
     BASE, "query.subquery", "subqueries and CTEs"),
    ("SELECT visits.region, row_number() OVER () FROM visits GROUP BY visits.region",
     BASE, "query.window_function", "window functions"),
    ("SELECT visits.region, random() FROM visits GROUP BY visits.region", BASE, "function.not_allowed",
     "function random() is not allowed"),
    ("SELECT count(*) FROM visits WHERE visits.region[1] = 'a'", BASE, "query.construct_not_allowed", "BRACKET"),
    ("SELECT visits.region FROM visits UNION SELECT visits.region FROM visits", BASE, "query.set_operation", "UNION"),
    ("SELECT DISTINCT ON (visits.region) visits.region, count(*) FROM visits GROUP BY visits.region",
     BASE, "query.distinct_on", "DISTINCT ON"),
    ("SELECT visits.region, count(*) FROM visits GROUP BY ALL", BASE, "query.group_by_all", "GROUP BY ALL"),
    ("SELECT count(*) FROM visits WHERE count(*) > 1", BASE, "where.aggregate", "HAVING"),
    ("SELECT sum(count(*)) FROM visits", BASE, "aggregate.nested", "nested"),
    ("SELECT count(DISTINCT visits.region, visits.spend) FROM visits", BASE, "aggregate.not_allowed", "one expression"),
    ("SELECT count(*) FROM visits GROUP BY visits.region ORDER BY spend", BASE, "query.ungrouped_column", "spend"),
    ("SELECT visits.region, count(*) FROM visits GROUP BY visits.region LIMIT 'x'", BASE, "query.limit", "LIMIT"),
    ("SELECT visits.region, count(*) FROM visits GROUP BY visits.region LIMIT 1.5", BASE, "query.limit", "LIMIT"),
    ("SELECT visits.region, count(*) FROM visits GROUP BY visits.region LIMIT 2 OFFSET 'x'", BASE, "query.limit",
     "OFFSET"),
    ("SELECT visits.region, count(*) FROM visits GROUP BY visits.region OFFSET 1 + 1", BASE, "query.limit", "OFFSET"),
    ("SELECT count(*) FROM visits v SEMI JOIN loyalty l ON v.hh = l.hh", BASE_JOIN, "join.kind", "SEMI joins"),
    ("SELECT count(*) FROM visits v ANTI JOIN loyalty l ON v.hh = l.hh", BASE_JOIN, "join.kind", "ANTI joins"),
    ("SELECT count(*) FROM visits v ASOF JOIN loyalty l ON v.hh = l.hh", BASE_JOIN, "join.kind", "ASOF joins"),
    ("SELECT count(*) FROM visits v CROSS JOIN loyalty l ON v.hh = l.hh", BASE_JOIN, "join.cross", "cross joins"),
    ("SELECT count(*) FROM visits v JOIN loyalty l", BASE_JOIN, "join.cross", "cross joins"),
    ("SELECT count(*) FROM visits v JOIN loyalty l ON v.hh = l.hh AND v.hh < l.hh", BASE_JOIN, "join.undeclared",
     "join condition v.hh < l.hh is not a declared join"),
    ("SELECT count(v.hh) FROM visits v JOIN loyalty l ON v.hh = l.hh", BASE_JOIN, "column.join_key_in_aggregate",
     "join key v.hh"),
    ("SELECT count(*) FROM visits WHERE x.region = 'a'", BASE, "query.subquery",
     "x.region is not a column of a table in FROM"),
]


@pytest.mark.parametrize("crafted, base, rule, message", CRAFTED, ids=[f"{c[2]}-{i}" for i, c in enumerate(CRAFTED)])
def test_authorise_refuses_what_the_resolver_would_have(room, crafted, base, rule, message):
    refusal = crafted_refusal(room, crafted, base)
    assert (refusal.rule, message in refusal.message) == (rule, True), refusal.message


def test_authorise_join_hints_name_the_rules_joins(room):
    refusal = crafted_refusal(room, "SELECT count(*) FROM visits v SEMI JOIN loyalty l ON v.hh = l.hh", BASE_JOIN)
    assert refusal.hint == "rule agg declares joins: visits.hh = loyalty.hh, visits.region = regions.region"
    base = "SELECT count(*) FROM visits v JOIN visits w ON v.hh = w.hh"  # resolves; no rule declares it
    narrow_only = dataclasses.replace(room.cleanrooms["room"].analysts["ana"], rules=("narrow",))
    refusal = crafted_refusal(room, base, base, analyst=narrow_only)
    assert (refusal.rule, refusal.hint) == ("join.undeclared", "rule narrow declares joins: none")


def test_authorise_allows_what_it_should_on_crafted_trees(room):
    allowed = [
        ("SELECT count(*) FROM visits WHERE region = 'a'", BASE),  # an unqualified column is a dimension
        ("SELECT DISTINCT visits.region, count(*) FROM visits GROUP BY visits.region", BASE),
        ("SELECT visits.region, count(*) AS n FROM visits GROUP BY visits.region HAVING n > 1 ORDER BY n "
         "LIMIT 2 OFFSET 1", BASE),
        ("SELECT count(DISTINCT v.hh) FROM visits v INNER JOIN loyalty l ON v.hh = l.hh", BASE_JOIN),
        ("SELECT count(*) FROM visits v LEFT OUTER JOIN loyalty l ON l.hh = v.hh", BASE_JOIN),
    ]
    for crafted, base in allowed:
        assert authorise_crafted(room, crafted, base).authorisation.authorised_by == "rule:agg", crafted


def test_authorise_with_no_rules_says_so(room):
    no_rules = dataclasses.replace(room.cleanrooms["room"].analysts["ana"], rules=())
    refusal = crafted_refusal(room, "SELECT count(*) FROM visits", "SELECT count(*) FROM visits", analyst=no_rules)
    assert refusal.rule == "rule.no_rule_for_tables"
    assert refusal.hint == "you have no aggregation rules; run an approved template instead"


def test_an_unapproved_rule_is_skipped_and_reported(room, monkeypatch):
    collab = room.context.collab
    approved = collab.require_approved

    def require(cleanroom, kind, name, tables=None):
        if (kind, name) == ("rule", "agg"):
            raise Refused("rule agg is not approved", rule="rule.not_approved")
        return approved(cleanroom, kind, name, tables)

    monkeypatch.setattr(collab, "require_approved", require)
    state = room.compile(request("SELECT count(*) FROM visits"))  # agg allows it but is not approved: narrow
    assert (state.authorisation.authorised_by, state.authorisation.min_group_size) == ("rule:narrow", 6)
    assert state.authorisation.approvals
    error = refusal(room, "SELECT sum(spend) FROM visits")  # only agg allows it
    assert error.rule == "rule.not_approved"


def test_rewrite_turns_casts_into_try_casts(room):
    state = state_before(room, "SELECT count(*) FROM visits WHERE region = 'a'", rewrite_pass.rewrite)
    tree = sqlglot.parse_one("SELECT count(*) FROM visits WHERE CAST(visits.region AS INT) > TRY_CAST('1' AS INT)",
                             read="postgres")
    sql = rewrite_pass.rewrite(state.evolve(tree=tree)).generated_sql
    assert "TRY_CAST(visits.region AS INT) > TRY_CAST('1' AS INT)" in sql and " CAST(" not in sql


def test_rewrite_clamps_policy_measures_only(room):
    state = state_before(room, "SELECT region, sum(spend) FROM visits GROUP BY region", rewrite_pass.rewrite)
    tree = sqlglot.parse_one("SELECT visits.region, sum(visits.spend) AS s FROM visits GROUP BY visits.region "
                             "ORDER BY s", read="postgres")  # s: an output name, no table's column
    sql = rewrite_pass.rewrite(state.evolve(tree=tree)).generated_sql
    assert "LEAST(GREATEST(visits.spend, 0.0), 50.0)" in sql and "ORDER BY 3 DESC, s" in sql
