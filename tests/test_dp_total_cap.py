"""The total contribution bound, `privacy.max_contributions_per_unit` (C): a unit adds
at most C rows to a whole query, over all its groups, on top of max_rows_per_unit (r)
per group and max_groups_per_unit (g) groups (gateway/dp/bounding.py, families).

Checked here: the L2 bound of Sensitivity.of_rows against every allowed integer
change of small cases; the bounding SQL on adversarial data (a unit with 10,000
rows in every group, NULL group keys, 500 identical rows, ties of the keyed hash)
keeps at most C rows per unit, r per group and min(g, C) groups; removing any one
of those units moves every bounded quantity by at most the L1 and L2 sensitivity
the noise is calibrated to; the sensitivities the analyst is shown; the intervals
still cover the truth >= 93% of 200 repetitions on data no bound clips; and the
policy key is validated.
"""

from __future__ import annotations

import itertools
import math
import re

import duckdb
import pytest
import sqlglot
from sqlglot import expressions as exp

from gateway.dp import noising
from gateway.dp.bounding import _total_cap
from gateway.dp.families import QUANTITIES
from gateway.dp.families.base import Contribution, Sensitivity
from gateway.dp.plan import Kind
from gateway.engine import QueryRequest
from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy
from tests.roomkit import Room, build_engine, private_table, simple_policy

REGIONS = ["r0", "r1", "r2", "r3", "r4", "r5"]
COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": REGIONS},  # public keys
    "day": {"role": "dimension"},  # keys selected privately (NULL is a group too)
    "spend": {"role": "measure", "bounds": [0, 50]},
}
R, G, C = 3, 4, 5  # C < r g: the total bound binds
UPPER = 50.0

# 300 ordinary households, 2 to 4 rows each, one per region (and no more than 2 a day): no bound clips them.
ORDINARY = ("CREATE TABLE visits AS SELECT 'h' || i AS hh, "
            f"{REGIONS}[1 + (i + j) % 6] AS region, 'd' || ((i + j) % 3) AS day, (i * 7 + j) % 45 AS spend "
            "FROM range(300) t(i), range(4) r(j) WHERE j < 2 + i % 3")
ADVERSARIES = [
    # 10,000 rows in every region and every day, a seventh of them with no day, far above the bounds
    f"INSERT INTO visits SELECT 'whale', {REGIONS}[1 + j % 6], CASE WHEN j % 7 = 0 THEN NULL ELSE 'd' || (j % 5) END, "
    "10000 FROM range(10000) r(j)",
    # 500 identical rows: ties everywhere a value could order them
    "INSERT INTO visits SELECT 'twin', 'r2', 'd1', 25 FROM range(500)",
    # only NULL days, in three regions
    f"INSERT INTO visits SELECT 'nulls', {REGIONS}[1 + j % 3], NULL, j FROM range(9) r(j)",
]
REMOVED = ("whale", "twin", "nulls", "h0", "h7")
SETUP = [ORDINARY, *ADVERSARIES] + [
    f"CREATE TABLE visits_minus_{unit} AS SELECT * FROM visits WHERE hh <> '{unit}'" for unit in REMOVED]
QUERIES = {
    "public keys": "SELECT region, count(*), count(DISTINCT hh), sum(spend), avg(spend), median(spend) "
                   "FROM visits GROUP BY region",
    "private keys": "SELECT day, count(*), count(spend), sum(spend), avg(spend) FROM visits GROUP BY day",
    "two keys": "SELECT region, day, count(*), sum(spend) FROM visits GROUP BY region, day",
    "one group": "SELECT count(*), sum(spend), avg(spend), median(spend) FROM visits",
}


def dp_policy(accounting="pure", epsilon=1.0, **privacy) -> dict:
    policy = simple_policy({"visits": private_table("visits", COLUMNS)},
                           aggregates=("count", "count_distinct", "sum", "avg", "median"), k=2)
    policy["privacy"] = {"epsilon_per_query": epsilon, "delta_per_query": 1e-6, "max_rows_per_unit": R,
                         "max_groups_per_unit": G, "max_contributions_per_unit": C, "accounting": accounting,
                         "budget": {"epsilon": 10_000, "delta": 0.01}, **privacy}
    policy["privacy"] = {key: value for key, value in policy["privacy"].items() if value is not None}
    return policy


def make_engine(tmp_path, setup=SETUP, **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return build_engine(tmp_path, dp_policy(**settings), list(setup))


def request(sql: str) -> QueryRequest:
    return QueryRequest(user="ana", cleanroom="room", sql=sql)


ROOM = Room(dp_policy(report_clipping=0.1), SETUP)  # the module's `engine` (tests/conftest.py)


def run(engine, sql: str, table: str = "visits") -> list[dict]:
    source = '"src_room"."main"."visits"'
    assert sql.count(source) == 1, "the bounded SQL reads the table once"
    return engine.database.cursor().sql(sql.replace(source, f'"src_room"."main"."{table}"')).to_arrow_table().to_pylist()


# -- the L2 bound ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, groups", list(itertools.product(range(1, 5), range(1, 5))))
def test_the_l2_bound_is_the_largest_norm_of_any_allowed_change(rows, groups):
    """Every integer change x in [0, r]^g with sum(x) <= C, for every C up to r g + 1:
    the largest sum is L1, the largest Euclidean norm is L2 exactly (tight), and both
    stay within Hoelder's sqrt(r min(C, r g)). Integer points suffice: the maximum of a
    convex function over the polytope is at a vertex, and its vertices are integer."""
    for total in [*range(1, rows * groups + 2), None]:
        bound = Sensitivity.of_rows(Contribution(rows, groups, total))
        allowed = [x for x in itertools.product(range(rows + 1), repeat=groups) if total is None or sum(x) <= total]
        assert max(sum(x) for x in allowed) == bound.l1
        assert math.isclose(max(math.sqrt(sum(v * v for v in x)) for x in allowed), bound.l2)
        in_all = rows * groups if total is None else min(total, rows * groups)
        assert bound.l2 <= math.sqrt(rows * in_all) + 1e-12
        scaled = Sensitivity.of_rows(Contribution(rows, groups, total), 2.5)
        assert (scaled.l1, scaled.l2) == pytest.approx((2.5 * bound.l1, 2.5 * bound.l2))


def test_without_a_binding_total_the_bounds_are_the_per_group_ones():
    for total in (None, R * G, R * G + 7):
        bounds = Contribution(R, G, total)
        assert not bounds.binds and bounds.groups == G
        rows = Sensitivity.of_rows(bounds)
        assert (rows.l1, rows.l2) == (R * G, pytest.approx(R * math.sqrt(G)))
    assert Contribution(R, G, R * G - 1).binds and Contribution(R, G, 2).groups == 2


# -- what the bounding SQL keeps, unit by unit -------------------------------------------------------


def kept_by_unit(engine, sql: str) -> dict:
    """From the bounding's own CTEs: per unit, its groups, rows kept (least(rows, allowance)
    summed), most rows kept in one group, and largest allowance."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    probe = exp.select('"__unit"', 'COUNT(*)', 'SUM(LEAST("__n", "__k"))', 'MAX(LEAST("__n", "__k"))', 'MAX("__k")') \
        .from_('"__capped"').group_by('"__unit"')
    probe.set("with_", tree.args["with_"])
    rows = engine.database.cursor().sql(probe.sql(dialect="duckdb")).fetchall()
    return {unit: {"groups": g, "rows": n, "most": most, "allowance": top} for unit, g, n, most, top in rows}


@pytest.mark.parametrize("query", ["public keys", "private keys", "two keys"])
def test_no_unit_keeps_more_than_the_total_whatever_its_rows(engine, query):
    sql = engine.compile(request(QUERIES[query])).generated_sql
    kept = kept_by_unit(engine, sql)
    assert len(kept) == 303
    for unit, found in kept.items():
        assert found["rows"] <= C and found["most"] <= R and found["groups"] <= min(G, C), (unit, found)
        assert 0 < found["allowance"] <= R
    # 10,000 rows in every group: exactly C kept, in min(g, C) groups
    assert kept["whale"]["rows"] == C and kept["whale"]["most"] == R and kept["whale"]["groups"] == min(G, C)
    assert kept["twin"] == {"groups": 1, "rows": R, "most": R, "allowance": R}  # 500 rows in one group: r
    # households no bound clips keep every row
    assert all(kept[f"h{i}"]["rows"] == 2 + i % 3 for i in range(300) if query == "public keys")


def test_hash_ties_and_null_groups_never_let_a_unit_past_the_total():
    """The allowance window on a hand-made bounded table: equal keyed hashes across a unit's
    groups, a NULL group, more groups than C; in every order DuckDB may pick for a tie, the
    rows kept add up to at most C, none above r, and the result is the same every run."""
    con = duckdb.connect()
    con.execute('CREATE TABLE "__kept" ("__unit" VARCHAR, "__g0" VARCHAR, "__h" UBIGINT, "__n" BIGINT)')
    con.execute("""INSERT INTO "__kept" VALUES ('a', 'x', 7, 3), ('a', 'y', 7, 3), ('a', NULL, 7, 3), ('a', 'z', 7, 9),
                   ('b', NULL, 1, 1), ('b', 'x', 1, 1), ('b', 'y', 1, 1), ('b', 'z', 1, 1), ('b', 'w', 1, 1),
                   ('b', 'v', 1, 1), ('c', 'x', 5, 2)""")
    ctes: list[str] = []
    source, allowance = _total_cap(ctes, ['"__g0"'], R, C)
    allowed = allowance.replace("b.", "")
    query = (f"WITH {', '.join(ctes)} SELECT \"__unit\", list(\"__g0\" ORDER BY \"__h\", \"__g0\") "
             f"FILTER (WHERE LEAST(\"__n\", {allowed}) > 0), SUM(LEAST(\"__n\", {allowed})), MAX({allowed}), "
             f"MIN({allowed}) FROM {source} GROUP BY 1 ORDER BY 1")
    first = con.execute(query).fetchall()
    for _ in range(5):
        assert con.execute(query).fetchall() == first
    kept = {unit: (groups, rows, most, least) for unit, groups, rows, most, least in first}
    assert kept["a"][1:] == (C, R, 0) and len(kept["a"][0]) == 2  # 3 + 2 of its 18 rows; nothing for the rest
    assert kept["b"][1:] == (C, R, 0) and len(kept["b"][0]) == C  # six groups of one row: C of them
    assert kept["c"] == (["x"], 2, R, R)


# -- one unit removed ----------------------------------------------------------------------------------


def changes(full: list[dict], without: list[dict], plan) -> dict:
    """Per quantity, the vector of changes over groups (lists: values added per group)."""
    keys = [g.column for g in plan.groups]

    def by_group(rows):
        return {tuple(row[k] for k in keys): row for row in rows}

    before, after = by_group(full), by_group(without)
    assert set(after) <= set(before)  # private keys: a group may vanish with the unit
    moved = {}
    for quantity in plan.quantities:
        column = quantity.column
        if quantity.kind is Kind.QUANTILE:
            moved[column] = [len(before[g][column]) - len(after[g][column]) if g in after else len(before[g][column])
                             for g in before]
            for g in after:  # only values of the removed unit left: the rest is the same multiset
                rest = list(before[g][column])
                for value in after[g][column]:
                    rest.remove(value)
        else:
            moved[column] = [before[g][column] - (after[g][column] if g in after else 0) for g in before]
    return moved


@pytest.mark.parametrize("query", list(QUERIES))
def test_removing_one_unit_moves_each_quantity_by_at_most_its_stated_sensitivity(engine, query):
    state = engine.compile(request(QUERIES[query]))
    plan, sql = state.noise_plan, state.generated_sql
    bounds = noising.contribution(plan)
    assert bounds.total_per_unit == C
    full = run(engine, sql)
    for unit in REMOVED:
        moved = changes(full, run(engine, sql, f"visits_minus_{unit}"), plan)
        for quantity in plan.quantities:
            change = moved[quantity.column]
            stated = QUANTITIES[quantity.kind].sensitivity(quantity, bounds)
            if quantity.kind is not Kind.CENTERED_SUM:  # (x - midpoint) may be negative; nothing else is
                assert all(v >= -1e-9 for v in change), (unit, quantity.kind)
            if quantity.kind is Kind.QUANTILE:
                assert max(change) <= stated.per_group == R
                assert sum(1 for v in change if v) <= bounds.groups and sum(change) <= C
                continue
            l1, l2 = sum(abs(v) for v in change), math.sqrt(sum(v * v for v in change))
            assert l1 <= stated.l1 + 1e-6 and l2 <= stated.l2 + 1e-6, (query, unit, quantity.kind, change, stated)
        if unit == "whale" and plan.groups:  # it really is at the bound: C rows, in min(g, C) groups or fewer
            rows = next(q.column for q in plan.quantities if q.kind is Kind.ROWS)
            assert sum(moved[rows]) == C


def test_the_noise_is_calibrated_to_the_total_bound_and_the_analyst_is_told(engine, tmp_path):
    explained = engine.explain(request(QUERIES["public keys"]))["differential_privacy"]
    noise = {a["aggregate"]: a["noise"] for a in explained["aggregates"]}
    assert [n["sensitivity"] for n in noise["count"]] == [C]  # min(C, r g) = 5, not 12
    assert [n["sensitivity"] for n in noise["count_distinct"]] == [min(G, C)]
    assert [n["sensitivity"] for n in noise["sum"]] == [C * UPPER]
    assert [n["sensitivity"] for n in noise["avg"]] == [C * UPPER / 2, C]
    quantile = noise["median"][0]
    assert quantile["sensitivity"] == R and quantile["epsilon_per_group"] == pytest.approx(quantile["epsilon"] / G)
    assert explained["contribution_bounds"] == {"max_rows_per_unit": R, "max_groups_per_unit": G,
                                                "max_contributions_per_unit": C}
    release = engine.run(request(QUERIES["public keys"]))
    assert f"at most {R} row(s) to a group, {C} row(s) in all" in release.notices[0]
    bias = {b["bound"]: b for b in release.protection["bias"]}
    assert bias["max_contributions_per_unit"]["value"] == C
    assert "count(*)" in bias["max_contributions_per_unit"]["affects"]
    # under zCDP the Gaussian gets the L2 bound: one full group of r and C - r in another
    zcdp = make_engine(tmp_path / "zcdp", setup=[ORDINARY], accounting="zcdp")
    try:
        noise = {a["aggregate"]: a["noise"] for a in zcdp.explain(request(QUERIES["public keys"]))
                 ["differential_privacy"]["aggregates"]}
    finally:
        zcdp.close()
    l2 = math.sqrt(R * R + (C - R) ** 2)
    assert [n["sensitivity"] for n in noise["count"]] == [pytest.approx(l2)]
    assert [n["sensitivity"] for n in noise["count_distinct"]] == [pytest.approx(math.sqrt(min(G, C)))]
    assert [n["sensitivity"] for n in noise["sum"]] == [pytest.approx(l2 * UPPER)]


@pytest.mark.parametrize("total, named", [
    (5, ["max_contributions_per_unit", "max_groups_per_unit", "bounds"]),  # C = r: the rows bound clips nothing more
    (3, ["max_contributions_per_unit", "bounds"]),  # C < g as well: it is what limits the groups too
])
def test_each_bound_that_can_bias_is_named_once(tmp_path, total, named):
    engine = make_engine(tmp_path, setup=[ORDINARY], max_rows_per_unit=5, max_contributions_per_unit=total)
    try:
        bias = engine.explain(request(QUERIES["public keys"]))["differential_privacy"]["bias"]
    finally:
        engine.close()
    assert [b["bound"] for b in bias] == named
    entry = bias[0]
    assert ("count(DISTINCT hh)" in entry["affects"]) == (total < G)
    assert ("counts in at most" in entry["effect"]) == (total < G) and "up to" not in entry["effect"]

def test_a_total_that_cannot_bind_changes_nothing(tmp_path):
    loose = make_engine(tmp_path / "loose", setup=[ORDINARY], max_contributions_per_unit=R * G)
    plain = make_engine(tmp_path / "plain", setup=[ORDINARY], max_contributions_per_unit=None)
    tight = make_engine(tmp_path / "tight", setup=[ORDINARY], max_contributions_per_unit=2)
    try:
        sql = loose.compile(request(QUERIES["public keys"])).generated_sql
        assert '"__k"' not in sql and '"__n"' not in sql
        unkeyed = lambda text: re.sub(r"'[0-9a-f]{32}'", "KEY", text)  # each state folder has its own hash key
        assert unkeyed(sql) == unkeyed(plain.compile(request(QUERIES["public keys"])).generated_sql)
        explained = loose.explain(request(QUERIES["public keys"]))["differential_privacy"]
        noise = [n["sensitivity"] for a in explained["aggregates"] for n in a["noise"]]
        assert noise[:3] == [R * G, G, R * G * UPPER]
        assert explained["contribution_bounds"] == {"max_rows_per_unit": R, "max_groups_per_unit": G}  # bounds nothing
        # fewer rows in all than groups: a unit is in at most C groups
        explained = tight.explain(request(QUERIES["public keys"]))["differential_privacy"]["aggregates"]
        assert [a["noise"][0]["sensitivity"] for a in explained][:3] == [2, 2, 2 * UPPER]
        assert explained[-1]["noise"][0]["epsilon_per_group"] == pytest.approx(explained[-1]["noise"][0]["epsilon"] / 2)
        # without GROUP BY a unit adds min(r, C) rows: 2 of each household's 2 to 4
        state = tight.compile(request("SELECT count(*), sum(spend) FROM visits"))
        assert tight.database.cursor().sql(state.generated_sql).fetchall()[0][1] == 2 * 300
    finally:
        for engine in (loose, plain, tight):
            engine.close()


# -- intervals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accounting", ["pure", "zcdp"])
def test_intervals_still_cover_the_truth_where_no_bound_clips(tmp_path, accounting):
    """200 releases of the bounded table of data no bound clips (every household 2 to 4
    rows in all, one a region): each column's per-row interval covers the true
    value at least 93% of the time, with the noise calibrated to the total bound."""
    engine = make_engine(tmp_path, setup=[ORDINARY], accounting=accounting, epsilon=2.0)
    try:
        sql = "SELECT region, count(*) AS n, count(DISTINCT hh) AS units, sum(spend) AS total, avg(spend) AS mean " \
              "FROM visits GROUP BY region"
        state = engine.compile(request(sql))
        bounded = engine.database.cursor().sql(state.generated_sql).to_arrow_table()
        with duckdb.connect(str(tmp_path / "data" / "room.duckdb"), read_only=True) as con:
            truth = {r[0]: dict(zip(("n", "units", "total", "mean"), r[1:])) for r in con.execute(
                "SELECT region, count(*), count(DISTINCT hh), sum(spend), avg(spend) FROM visits GROUP BY 1").fetchall()}
        exact = {row["__g0"]: row for row in bounded.to_pylist()}
        counts = next(q.column for q in state.noise_plan.quantities if q.kind is Kind.ROWS)
        assert {g: exact[g][counts] for g in truth} == {g: t["n"] for g, t in truth.items()}  # nothing clipped
        pairs = {column: [] for column in ("n", "units", "total", "mean")}
        for _ in range(200):
            release = noising.publish(state.noise_plan, noising.measure(state.noise_plan, bounded, "hh"))
            for row, *intervals in zip(release.table.to_pylist(),
                                       *(release.protection["columns"][c]["intervals"] for c in pairs)):
                for column, (low, high) in zip(pairs, intervals):
                    if row[column] is not None:
                        pairs[column].append(low <= truth[row["region"]][column] <= high)
        for column, hits in pairs.items():
            assert len(hits) >= 5 * 200, column
            assert sum(hits) / len(hits) >= 0.93, (column, sum(hits) / len(hits))
    finally:
        engine.close()


# -- the policy key ----------------------------------------------------------------------------------------


def write_policy(tmp_path, value, where="privacy"):
    import yaml

    policy = simple_policy({"visits": private_table("visits", COLUMNS)})
    policy["privacy"] = {"epsilon_per_query": 1.0, "budget": {"epsilon": 10}}
    if where == "privacy":
        policy["privacy"]["max_contributions_per_unit"] = value
    else:
        policy["rules"]["agg"]["privacy"] = {"max_contributions_per_unit": value}
    path = tmp_path / f"policy-{where}.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.mark.parametrize("where", ["privacy", "rule"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "20", True, 100_001])
def test_a_total_that_is_not_a_positive_integer_is_refused_with_its_place(tmp_path, where, value):
    with pytest.raises(PolicyInvalid) as refused:
        load_policy(write_policy(tmp_path, value, where))
    assert "max_contributions_per_unit" in str(refused.value) and "policy-" in str(refused.value)


def test_the_total_is_read_from_the_policy_and_a_rule_may_replace_it(tmp_path):
    assert load_policy(write_policy(tmp_path, 20)).privacy.max_contributions_per_unit == 20
    room = load_policy(write_policy(tmp_path, 7, where="rule"))
    assert room.privacy.max_contributions_per_unit is None and room.rules["agg"].privacy.max_contributions_per_unit == 7
