"""Public time buckets (issue 11): a date or timestamp dimension declares a public
range and the periods analysts may group it by; grouping by one of them is then
public keys under differential privacy. Real engines over real DuckDB files;
the demo over HTTP and the wire."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from gateway.collab.canonical import plain, rule_hash
from gateway.dp import mechanisms
from gateway.dp.services import KEY_FILE
from gateway.engine import QueryRequest
from gateway.errors import PolicyInvalid, Refused
from gateway.policy.loader import load_policy
from tests.roomkit import build_engine, private_table, simple_policy
from tests.servers import get, post

FROM, TO = "2024-01-03", "2024-03-27"  # both Wednesdays: the first and last weeks are partial
COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": ["north", "south"]},
    "day": {"role": "dimension", "buckets": {"from": FROM, "to": TO, "by": ["day", "week", "month"]}},
    "seen": {"role": "dimension", "buckets": {"from": FROM, "to": TO, "by": ["day", "week"]}},
    "other": {"role": "dimension"},  # a DATE without buckets
    "spend": {"role": "measure", "bounds": [0, 50]},
}
TABLE = "CREATE TABLE visits (hh VARCHAR, region VARCHAR, day DATE, seen TIMESTAMP, other DATE, spend INTEGER)"
# 300 households, 3 rows each, from 2024-01-03 to 2024-02-29: every March week is empty.
INSIDE = [
    TABLE,
    "INSERT INTO visits SELECT 'h' || i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END, "
    "DATE '2024-01-03' + ((i * 7 + j) % 58)::INT, "
    "CAST(DATE '2024-01-03' + ((i * 7 + j) % 58)::INT AS TIMESTAMP) + to_hours(j * 5), "
    "DATE '2024-01-03' + ((i * 7 + j) % 58)::INT, (i + j) % 50 FROM range(300) t(i), range(3) r(j)",
    # the last moment of the range is inside it
    "INSERT INTO visits VALUES ('h1', 'south', DATE '2024-03-27', TIMESTAMP '2024-03-27 23:59:59', NULL, 5)",
]
# Rows of the same households outside the range: in the partial weeks and month at
# both edges (date_trunc would put them in a declared bucket), far away, at the
# end of time, and NULL. Many per household, so they would also use up group slots.
OUTSIDE = [
    "INSERT INTO visits SELECT 'h' || (i % 40), 'north', d, CAST(d AS TIMESTAMP) + to_hours(i % 24), d, 49 "
    "FROM range(400) t(i), (VALUES (DATE '2024-01-01'), (DATE '2024-01-02'), (DATE '2024-03-28'), "
    "(DATE '2024-03-31'), (DATE '2023-12-31'), (DATE '2024-04-01'), (DATE '2026-06-01'), (DATE '9999-12-31')) v(d)",
    "INSERT INTO visits VALUES ('h2', 'north', DATE '2024-03-28', TIMESTAMP '2024-03-28 00:00:00', NULL, 50)",
    "INSERT INTO visits SELECT 'h' || i, 'south', NULL, NULL, NULL, 50 FROM range(100) t(i), range(5) r(j)",
]
WEEKS = [dt.datetime(2024, 1, 1) + dt.timedelta(weeks=w) for w in range(13)]  # Mondays 01-01 .. 03-25
DAYS = [dt.date(2024, 1, 3) + dt.timedelta(days=d) for d in range(85)]  # 01-03 .. 03-27
MONTHS = [dt.datetime(2024, m, 1) for m in (1, 2, 3)]


def make_engine(tmp_path, setup=INSIDE, epsilon=1.0, k=2, privacy=True, columns=COLUMNS):
    tmp_path.mkdir(parents=True, exist_ok=True)
    # One bounding key for every engine here, so that two rooms keep the same groups of a unit.
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / KEY_FILE).write_text("5eed" * 8)
    policy = simple_policy({"visits": private_table("visits", columns)}, k=k)
    if privacy:
        policy["privacy"] = {"epsilon_per_query": epsilon, "delta_per_query": 1e-6, "max_rows_per_unit": 3,
                             "max_groups_per_unit": 2, "budget": {"epsilon": 1000.0, "delta": 0.001}}
    return build_engine(tmp_path, policy, list(setup))


def request(sql: str) -> QueryRequest:
    return QueryRequest(user="ana", cleanroom="room", sql=sql)


def bounded(engine, sql: str) -> dict:
    """The bounded (not yet noised) quantities per group key, straight from DuckDB."""
    state = engine.compile(request(sql))
    table = engine.database.cursor().sql(state.generated_sql).to_arrow_table()
    return {row["__g0"]: {k: v for k, v in row.items() if k != "__g0"} for row in table.to_pylist()}


BUCKETED = {
    "week of a timestamp": ("SELECT date_trunc('week', seen) AS w, count(*), sum(spend), count(DISTINCT hh) "
                            "FROM visits GROUP BY w", WEEKS),
    "day of a date, as itself": ("SELECT day, count(*), avg(spend) FROM visits GROUP BY day", DAYS),
    "month of a date, by ordinal": ("SELECT date_trunc('MONTH', day), count(*) FROM visits GROUP BY 1", MONTHS),
    "day of a timestamp": ("SELECT date_trunc('day', seen) AS d, count(*) FROM visits GROUP BY d",
                           [dt.datetime.combine(d, dt.time()) for d in DAYS]),
}


@pytest.mark.parametrize("name", list(BUCKETED))
def test_every_declared_bucket_is_a_candidate_and_empty_ones_count_zero(tmp_path, name):
    sql, expected = BUCKETED[name]
    engine = make_engine(tmp_path)
    totals = bounded(engine, sql)
    assert sorted(totals) == expected  # keys from the policy, in the key's own type
    plan = engine.compile(request(sql)).noise_plan
    assert plan.public_keys and plan.delta == 0.0
    release = engine.run(request(sql))
    groups = release.protection["groups"]
    assert groups["keys"] == "public" and groups["candidates"] == len(expected)
    assert groups["released"] + groups["suppressed_below_min_group_size"] == len(expected)
    assert release.protection["spent"] == {"epsilon": 1.0, "delta": 0.0}
    assert set(release.table.column(0).to_pylist()) <= set(expected)


def test_march_weeks_hold_no_rows_and_are_still_candidates(tmp_path):
    totals = bounded(make_engine(tmp_path), BUCKETED["week of a timestamp"][0])
    empty = [w for w in WEEKS if totals[w]["__units"] == 0]
    assert empty == WEEKS[9:12]  # 03-04, 03-11, 03-18; 03-25 holds h1's last moment
    assert totals[WEEKS[12]]["__units"] == 1


def test_the_candidates_do_not_depend_on_the_data(tmp_path):
    sql = BUCKETED["week of a timestamp"][0]
    full, empty = make_engine(tmp_path / "full"), make_engine(tmp_path / "empty", setup=[TABLE])
    assert full.explain(request(sql))["differential_privacy"]["groups"] == \
        empty.explain(request(sql))["differential_privacy"]["groups"]
    groups = empty.run(request(sql)).protection["groups"]
    assert groups["candidates"] == len(WEEKS)
    assert groups["released"] + groups["suppressed_below_min_group_size"] == len(WEEKS)


def test_empty_buckets_are_released_with_noise_when_it_clears_k(tmp_path):
    """Every period is a candidate: with much noise, periods without a single row
    come out too (k = 2 on the noisy count). Different filters: fresh noise."""
    engine = make_engine(tmp_path, epsilon=0.05)
    released_empty = 0
    for i in range(6):
        table = engine.run(request(f"SELECT date_trunc('week', seen) AS w, count(*) FROM visits "
                                   f"WHERE region <> 'x{i}' GROUP BY w")).table
        released_empty += sum(1 for w in table.column("w").to_pylist() if w in WEEKS[9:12])
    assert released_empty > 0  # P(none in 18 draws) is about 1e-6


@pytest.mark.parametrize("name", list(BUCKETED))
def test_rows_outside_the_range_and_null_dates_change_nothing(tmp_path, name):
    sql = BUCKETED[name][0]
    before = bounded(make_engine(tmp_path / "inside"), sql)
    after = bounded(make_engine(tmp_path / "outside", setup=INSIDE + OUTSIDE), sql)
    assert after == before  # not a count, a sum, a unit or a bounding slot moved


def test_the_range_filter_is_in_the_generated_sql_on_the_raw_column(tmp_path):
    engine = make_engine(tmp_path)
    generated = engine.compile(request(BUCKETED["week of a timestamp"][0])).generated_sql
    assert "\"visits\".\"seen\" >= TRY_CAST('2024-01-03 00:00:00' AS TIMESTAMP)" in generated
    assert "\"visits\".\"seen\" < TRY_CAST('2024-03-28 00:00:00' AS TIMESTAMP)" in generated
    generated = engine.compile(request(BUCKETED["day of a date, as itself"][0])).generated_sql
    assert "\"visits\".\"day\" BETWEEN TRY_CAST('2024-01-03' AS DATE) AND TRY_CAST('2024-03-27' AS DATE)" in generated


def test_where_narrows_the_periods_released(tmp_path):
    engine = make_engine(tmp_path)
    sql = "SELECT date_trunc('week', seen) AS w, count(*) FROM visits WHERE seen >= '2024-02-07' AND seen < DATE '2024-03-04' GROUP BY w"
    assert sorted(bounded(engine, sql)) == [dt.datetime(2024, 2, 5), dt.datetime(2024, 2, 12),
                                            dt.datetime(2024, 2, 19), dt.datetime(2024, 2, 26)]
    sql = "SELECT day, count(*) FROM visits WHERE day BETWEEN '2024-02-28' AND '2024-05-01' GROUP BY day"
    assert sorted(bounded(engine, sql)) == [dt.date(2024, 2, 28) + dt.timedelta(days=d) for d in range(29)]


ATTACKS = {
    "an undeclared unit": "SELECT date_trunc('hour', seen) AS h, count(*) FROM visits GROUP BY h",
    "a unit declared for another column": "SELECT date_trunc('month', seen) AS m, count(*) FROM visits GROUP BY m",
    "quarter": "SELECT date_trunc('quarter', day) AS q, count(*) FROM visits GROUP BY q",
    "a cast around the bucket": "SELECT CAST(date_trunc('week', seen) AS DATE) AS w, count(*) FROM visits GROUP BY w",
    "arithmetic on the bucket": "SELECT date_trunc('week', seen) + INTERVAL 1 DAY AS w, count(*) FROM visits GROUP BY w",
    "a timestamp as itself": "SELECT seen, count(*) FROM visits GROUP BY seen",
    "a timestamp cast to a date": "SELECT CAST(seen AS DATE) AS d, count(*) FROM visits GROUP BY d",
    "a date column without buckets": "SELECT date_trunc('week', other) AS w, count(*) FROM visits GROUP BY w",
    "the day shifted": "SELECT day + 1 AS d, count(*) FROM visits GROUP BY d",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_what_is_not_a_declared_bucket_is_selected_privately_or_refused(tmp_path, name):
    engine = make_engine(tmp_path)
    try:
        plan = engine.compile(request(ATTACKS[name])).noise_plan
    except Refused:
        return  # refused outright is safe too
    assert not plan.public_keys and plan.delta > 0  # keys selected privately, with a threshold
    explained = engine.explain(request(ATTACKS[name]))["differential_privacy"]["groups"]
    assert explained["keys"] == "selected privately" and explained["threshold"] > 1


def test_a_bucket_of_another_type_is_refused(tmp_path):
    with pytest.raises(Refused):
        make_engine(tmp_path).compile(request("SELECT date_trunc('week', region), count(*) FROM visits GROUP BY 1"))


def test_a_k_only_room_accepts_buckets_and_answers_as_before(tmp_path):
    """Without differential privacy nothing changes but that the policy may declare them:
    the k test, on every row (outside the range included), and no filter refusal."""
    engine = make_engine(tmp_path, setup=INSIDE + OUTSIDE, privacy=False, k=5)
    rows = engine.run(request("SELECT date_trunc('week', seen) AS w, count(*) AS n FROM visits GROUP BY w")).table
    truth = engine.database.cursor().sql(
        "SELECT date_trunc('week', seen) AS w, count(*) AS n FROM src_room.main.visits "
        "GROUP BY w HAVING count(DISTINCT hh) >= 5").to_arrow_table()
    assert sorted(rows.to_pylist(), key=str) == sorted(truth.to_pylist(), key=str)
    assert dt.datetime(2024, 4, 1) in rows.column("w").to_pylist()  # outside the range: only k applies here
    empty = engine.run(request("SELECT count(*) FROM visits WHERE region = 'atlantis'"))
    assert empty.table.num_rows <= 1


# -- the policy ------------------------------------------------------------------------

POLICY = """\
cleanroom: room
collaborators: {a: {}}
tables:
  visits:
    owner: a
    source: room
    relation: visits
    privacy_unit: hh
    columns:
      hh: {role: join_key}
      day:
        role: dimension
        buckets: {from: BUCKETS
"""


@pytest.mark.parametrize("buckets, where, message", [
    ("2024-03-01, to: 2024-02-01, by: [day]}", "13:37: tables.visits.columns.day.buckets.to",
     "to 2024-02-01 is before from 2024-03-01"),
    ("2024-02-30, to: 2024-03-01, by: [day]}", "13:19: tables.visits.columns.day.buckets.from",
     "'2024-02-30' is not a calendar date"),
    ("2024-01-01, to: 2024-03-01, by: [hour]}", "13:58: tables.visits.columns.day.buckets.by[0]",
     "'hour' is not one of ['day', 'week', 'month']"),
    ("2024-01-01, to: 2024-03-01, by: [day, day]}", "13:53: tables.visits.columns.day.buckets.by",
     "['day', 'day'] has non-unique elements"),
    ("2024-01-01, to: 2024-03-01}", "13:9: tables.visits.columns.day.buckets", "missing required key 'by'"),
    ("1/2/2024, to: 2024-03-01, by: [day]}", "13:19: tables.visits.columns.day.buckets.from",
     "write a date as yyyy-mm-dd (got '1/2/2024')"),
    ("1990-01-01, to: 2024-12-31, by: [month, day]}", "13:53: tables.visits.columns.day.buckets.by",
     "1990-01-01 to 2024-12-31 holds 12784 days, more than the 10000 public keys"),
])
def test_policy_problems_name_file_line_and_column(tmp_path, buckets, where, message):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("BUCKETS", buckets))
    with pytest.raises(PolicyInvalid) as error:
        load_policy(path)
    assert any(p.startswith(f"{path}:{where}:") and message in p for p in error.value.problems), error.value.problems


@pytest.mark.parametrize("column, problem", [
    ("      hh: {role: join_key, buckets: {from: 2024-01-01, to: 2024-02-01, by: [day]}}\n",
     "10:28: tables.visits.columns.hh.buckets: only dimensions declare buckets (this column is join_key)"),
    ("      day: {role: dimension, values: [a], buckets: {from: 2024-01-01, to: 2024-02-01, by: [day]}}\n",
     "10:43: tables.visits.columns.day.buckets: a column declares either values or buckets, not both"),
])
def test_buckets_belong_to_dimensions_without_values(tmp_path, column, problem):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.split("      hh:")[0] + column + ("" if "hh:" in column else "      hh: {role: join_key}\n"))
    with pytest.raises(PolicyInvalid) as error:
        load_policy(path)
    assert any(p.startswith(f"{path}:") and problem in p for p in error.value.problems), error.value.problems


def test_buckets_on_a_column_that_is_not_a_date_or_timestamp_stop_the_engine(tmp_path):
    columns = {**COLUMNS, "region": {"role": "dimension", "buckets": {"from": FROM, "to": TO, "by": ["day"]}}}
    with pytest.raises(PolicyInvalid) as error:
        make_engine(tmp_path, columns=columns)
    assert any("region.buckets: buckets need a DATE or TIMESTAMP column (it is VARCHAR)" in p
               for p in error.value.problems)


def test_declaring_buckets_needs_the_owners_approval_again(tmp_path):
    """Buckets widen what leaves (public keys): a rule's canonical form covers them. A
    column without them hashes as it did before the setting existed, so upgrading keeps
    every approval."""
    engine = make_engine(tmp_path)
    room = engine.context.cleanrooms["room"]
    table = room.tables["visits"]
    plain_day = dataclasses.replace(table.columns["day"], buckets=None)
    without = dataclasses.replace(room, tables={"visits": dataclasses.replace(
        table, columns={**table.columns, "day": plain_day})})
    assert rule_hash(without, without.rules["agg"]) != rule_hash(room, room.rules["agg"])
    assert "buckets" not in plain(plain_day) and plain(table.columns["day"])["buckets"]["units"] == ["day", "week", "month"]


# -- what a group must clear when keys are selected privately ------------------------------


def test_explain_states_the_units_a_privately_selected_group_needs(tmp_path):
    engine = make_engine(tmp_path, epsilon=0.1)
    explained = engine.explain(request("SELECT date_trunc('hour', seen) AS h, count(*) FROM visits GROUP BY h"))
    dp_ = explained["differential_privacy"]
    needed = dp_["groups"]["to_be_released"]
    assert dp_["privacy_unit"] == "hh"
    assert needed["noisy_units_at_least"] == dp_["groups"]["threshold"]
    assert needed["units_for_even_odds"] == dp_["groups"]["threshold"] < needed["units_for_95_percent"]
    assert f"reaches {needed['noisy_units_at_least']:,}" in needed["summary"]
    public = engine.explain(request(BUCKETED["week of a timestamp"][0]))["differential_privacy"]["groups"]
    assert "to_be_released" not in public and "threshold" not in public


def test_the_stated_units_are_what_the_mechanism_releases():
    """Against the real OpenDP measurement, 8,000 groups at a time: a group of
    units_for_95_percent units is released about 95% of the time and one unit fewer
    less often (it is the least such count); units_for_even_odds about half the time."""
    from gateway.dp.thresholds import units_needed

    selector = mechanisms.partition_selection(4, 1, 0.05, 1e-7)
    needed = units_needed(selector.threshold, selector.scale, 10)

    def released(units: int) -> float:
        return len(selector.apply({str(i): units for i in range(8000)})) / 8000

    assert released(needed["units_for_95_percent"]) >= 0.94
    assert released(needed["units_for_95_percent"] - 1) < 0.96
    assert 0.46 < released(needed["units_for_even_odds"]) < 0.56
    assert released(needed["units_for_even_odds"] - (needed["units_for_95_percent"] - needed["units_for_even_odds"])) < 0.07
    tighter = units_needed(selector.threshold, selector.scale, selector.threshold + 500)  # k above the threshold
    assert tighter["noisy_units_at_least"] == selector.threshold + 500


# -- the demo, over HTTP and the wire ---------------------------------------------------


def test_demo_weekly_series_of_a_segment_is_released_as_public_keys_over_http(dp_http_server):
    sql = ("SELECT date_trunc('week', shown_at) AS week, count(DISTINCT household_id) AS households "
           "FROM impressions WHERE channel = 'ctv' GROUP BY 1 ORDER BY 1")
    explained = post(dp_http_server, "/v1/explain", {"sql": sql})[1]
    assert explained["differential_privacy"]["groups"]["keys"] == "public"
    assert explained["differential_privacy"]["groups"]["candidates"] == 53  # 2025-12-29 .. 2026-12-28
    assert explained["cost"]["delta"] == 0.0
    status, body = post(dp_http_server, "/v1/query", {"sql": sql})
    assert status == 200, body
    # every week is a candidate; at the tests' 10,000 households (a tenth of the demo's, with
    # its bounds retuned to C = 20) a few weeks' noisy household counts fall under k
    assert body["row_count"] >= 27 and body["protection"]["groups"]["keys"] == "public"
    assert all("2025-12-29" <= row[0] <= "2026-12-28T23:59:59" for row in body["rows"])
    assert body["protection"]["groups"]["candidates"] == 53 and body["protection"]["spent"]["delta"] == 0.0
    tables = get(dp_http_server, "/v1/tables")["tables"]
    shown_at = next(c for t in tables if t["name"] == "impressions" for c in t["columns"] if c["name"] == "shown_at")
    assert shown_at["buckets"] == {"from": "2026-01-01", "to": "2026-12-31", "by": ["day", "week", "month"]}


def test_demo_explain_over_http_shows_the_households_a_day_needs(dp_http_server):
    sql = "SELECT date_trunc('hour', shown_at) AS hour, count(*) FROM impressions GROUP BY 1"
    status, explained = post(dp_http_server, "/v1/explain", {"sql": sql})
    assert status == 200
    groups = explained["differential_privacy"]["groups"]
    assert groups["keys"] == "selected privately"
    assert groups["to_be_released"]["noisy_units_at_least"] == groups["threshold"] > 1000  # epsilon 0.05 for units
    assert "household_id" in groups["to_be_released"]["summary"]


def test_demo_explain_over_the_wire_shows_the_threshold(dp_pg):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(dp_pg.dsn()) as conn:
        plan = json.loads(conn.execute("EXPLAIN (FORMAT JSON) SELECT date_trunc('hour', shown_at), count(*) "
                                       "FROM impressions GROUP BY 1").fetchone()[0])
        needed = plan["differential_privacy"]["groups"]["to_be_released"]
        assert needed["units_for_95_percent"] > needed["units_for_even_odds"] > 1000
        text = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT purchased_on, count(*) FROM purchases WHERE region = 'central' GROUP BY 1").fetchall())
        assert '"keys": "public"' in text and "to_be_released" not in text
        rows = conn.execute("SELECT purchased_on, count(*) FROM purchases WHERE region = 'central' "
                            "GROUP BY 1 ORDER BY 1").fetchall()
        assert rows and all(dt.date(2026, 1, 1) <= r[0] <= dt.date(2026, 12, 31) for r in rows)
