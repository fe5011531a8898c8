"""No charge for what the policy alone says is empty (issue 11): a filter comparing a
dimension with values outside its declared ones, or a time filter outside its
declared range, is refused at compile time, before any charge, and audited.
Real engines over real DuckDB files; the demo over HTTP and the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.engine import QueryRequest
from gateway.errors import Refused
from tests.roomkit import build_engine, private_table, simple_policy
from tests.servers import PASSWORD, get, post

COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": ["north", "south", "east"]},
    "place": {"role": "dimension", "values": ["Öland", "north"]},  # beyond ASCII: case folding not judged
    "size": {"role": "dimension", "values": [1, 2, 3]},
    "day": {"role": "dimension", "buckets": {"from": "2024-01-01", "to": "2024-03-31", "by": ["day", "week"]}},
    "seen": {"role": "dimension", "buckets": {"from": "2024-01-01", "to": "2024-03-31", "by": ["week"]}},
    "note": {"role": "dimension"},  # no declared values: anything may be asked
    "spend": {"role": "measure", "bounds": [0, 50]},
}
SHOPS = {"hh": {"role": "join_key"}, "kind": {"role": "dimension", "values": ["a", "b"]}}
SETUP = [
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, ['north', 'south', 'east'][1 + i % 3] AS region, "
    "['Öland', 'north'][1 + i % 2] AS place, "
    "1 + i % 3 AS size, DATE '2024-01-01' + (i % 90)::INT AS day, "
    "CAST(DATE '2024-01-01' + (i % 90)::INT AS TIMESTAMP) + to_hours(i % 24) AS seen, 'n' || (i % 5) AS note, "
    "i % 50 AS spend FROM range(600) t(i)",
    "CREATE TABLE shops AS SELECT 'h' || i AS hh, ['a', 'b'][1 + i % 2] AS kind FROM range(600) t(i)",
]
TEMPLATES = {
    "by_note": {"sql": "SELECT v.region, count(*) AS n FROM visits v WHERE v.region = :region GROUP BY v.region",
                "parameters": {"region": {"type": "string", "pattern": "[A-Za-z]+"}}},
    "by_kind": {"sql": "SELECT v.region, count(*) AS n FROM visits v JOIN shops s ON v.hh = s.hh AND s.kind = :kind "
                       "GROUP BY v.region",
                "parameters": {"kind": {"type": "string", "pattern": "[a-z]+"}}},
}


def make_engine(tmp_path, privacy=True):
    tables = {"visits": private_table("visits", COLUMNS), "shops": private_table("shops", SHOPS, owner="b")}
    policy = simple_policy(tables, k=2, joins=[("visits.hh", "shops.hh")], templates=TEMPLATES)
    if privacy:
        policy["privacy"] = {"epsilon_per_query": 0.5, "delta_per_query": 1e-6, "max_rows_per_unit": 3,
                             "max_groups_per_unit": 2, "budget": {"epsilon": 100.0, "delta": 0.001}}
    return build_engine(tmp_path, policy, SETUP)


def request(sql: str | None = None, **what) -> QueryRequest:
    return QueryRequest(user="ana", cleanroom="room", sql=sql, **what)


def spent(engine) -> tuple[float, int]:
    balance = engine.budget("ana", "room")
    return balance["spent"]["epsilon"], balance["queries"]


def audit_records(state_dir: Path) -> list[dict]:
    from gateway.audit_log import read_records

    return read_records(state_dir)


EMPTY = {
    "a value outside the declared ones": ("SELECT count(*) FROM visits WHERE region = 'atlantis'",
                                          "filter.undeclared_value", "north, south, east"),
    "another letter case": ("SELECT count(*) FROM visits WHERE region = 'North'", "filter.undeclared_value",
                            "did you mean 'north'?"),
    "the constant on the left": ("SELECT region, count(*) FROM visits WHERE 'NORTH' = region GROUP BY region",
                                 "filter.undeclared_value", "letter case included"),
    "an IN list all outside": ("SELECT count(*) FROM visits WHERE region IN ('atlantis', 'mu', 'South')",
                               "filter.undeclared_value", "did you mean 'south'?"),
    "lower() of the column against upper case": ("SELECT count(*) FROM visits WHERE lower(region) = 'North'",
                                                 "filter.undeclared_value", "north, south, east"),
    "upper() of the column against lower case": ("SELECT count(*) FROM visits WHERE region = 'north' AND upper(region) = 'north'",
                                "filter.undeclared_value", "north"),
    "one empty term of an AND": ("SELECT count(*) FROM visits WHERE note = 'n1' AND (size = 7)",
                                 "filter.undeclared_value", "1, 2, 3"),
    "every branch of an OR": ("SELECT count(*) FROM visits WHERE (region = 'x' OR region = 'y') OR size IN (0, 4)",
                              "filter.undeclared_value", "visits.region"),
    "beyond ASCII, another letter case": ("SELECT count(*) FROM visits WHERE place = 'öland'",
                                          "filter.undeclared_value", "did you mean 'Öland'?"),
    "numbers outside": ("SELECT count(*) FROM visits WHERE size IN (4, -1, 2.5)", "filter.undeclared_value", "1, 2, 3"),
    "a date after the range": ("SELECT count(*) FROM visits WHERE day > '2024-03-31'", "filter.outside_range",
                               "2024-01-01 .. 2024-03-31"),
    "a timestamp before the range": ("SELECT count(*) FROM visits WHERE seen < TIMESTAMP '2024-01-01 00:00:00'",
                                     "filter.outside_range", "visits.seen"),
    "a BETWEEN beyond the range": ("SELECT count(*) FROM visits WHERE seen BETWEEN '2025-01-01' AND '2025-02-01'",
                                   "filter.outside_range", "visits.seen"),
    "the day after the last one": ("SELECT count(*) FROM visits WHERE seen >= DATE '2024-04-01'",
                                   "filter.outside_range", "visits.seen"),
    "two comparisons that meet nowhere": ("SELECT count(*) FROM visits WHERE day >= '2024-03-01' AND day < '2024-02-01'",
                                          "filter.outside_range", "visits.day"),
    "a date column against a later moment of its last day": (
        "SELECT count(*) FROM visits WHERE day >= TIMESTAMP '2024-03-31 00:00:01'", "filter.outside_range", "visits.day"),
    "grouped by a bucket, outside": ("SELECT date_trunc('week', seen) AS w, count(*) FROM visits "
                                     "WHERE seen < '2023-06-01' GROUP BY w", "filter.outside_range", "visits.seen"),
}


@pytest.mark.parametrize("name", list(EMPTY))
def test_a_filter_the_policy_says_is_empty_is_refused_uncharged_and_audited(tmp_path, name):
    sql, rule, hint = EMPTY[name]
    engine = make_engine(tmp_path)
    before = spent(engine)
    with pytest.raises(Refused) as refused:
        engine.run(request(sql))
    assert refused.value.rule == rule
    assert hint in (refused.value.hint or "")
    assert "nothing was charged" in refused.value.message
    assert spent(engine) == before
    with pytest.raises(Refused):  # EXPLAIN says so too, before anything is paid
        engine.explain(request(sql))
    record = [r for r in audit_records(tmp_path / "state") if r.get("sql") == sql][-1]
    assert record["decision"] == "refused" and record["rule"] == rule
    assert record["privacy_budget_spent"] is None


NOT_EMPTY = {
    "a declared value": "SELECT count(*) FROM visits WHERE region = 'north'",
    "some declared": "SELECT count(*) FROM visits WHERE region IN ('north', 'atlantis')",
    "not equal": "SELECT count(*) FROM visits WHERE region <> 'atlantis'",
    "NOT": "SELECT count(*) FROM visits WHERE NOT region = 'atlantis'",
    "lower() matching": "SELECT count(*) FROM visits WHERE lower(region) = 'north'",
    "lower() where a value is beyond ASCII is not judged": "SELECT count(*) FROM visits WHERE lower(place) = 'xyz'",
    "beyond ASCII, compared exactly": "SELECT count(*) FROM visits WHERE place = 'Öland'",
    "one branch of an OR": "SELECT count(*) FROM visits WHERE region = 'atlantis' OR size = 2",
    "an undeclared column": "SELECT count(*) FROM visits WHERE note = 'atlantis'",
    "numbers that are declared": "SELECT count(*) FROM visits WHERE size IN (2.0, 9)",
    "LIKE is not judged": "SELECT count(*) FROM visits WHERE region LIKE 'atl%'",
    "inside the range": "SELECT count(*) FROM visits WHERE seen >= '2024-03-31 23:00' AND day <= '2024-03-31'",
    "the first moment": "SELECT count(*) FROM visits WHERE seen <= '2024-01-01'",
    "an OR of ranges": "SELECT count(*) FROM visits WHERE seen < '2023-01-01' OR seen > '2024-02-01'",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NOT_EMPTY))
def test_filters_that_can_match_run_and_are_charged(tmp_path, name):
    engine = make_engine(tmp_path)
    before = spent(engine)
    release = engine.run(request(NOT_EMPTY[name]))
    assert release.table.num_rows <= 1  # one group, released if its noisy count clears k
    assert release.protection["groups"]["min_group_size"] == 2
    assert spent(engine)[0] == pytest.approx(before[0] + 0.5)


def test_templates_are_judged_on_their_filled_in_statement_including_join_conditions(tmp_path):
    engine = make_engine(tmp_path)
    before = spent(engine)
    with pytest.raises(Refused) as refused:
        engine.run(request(template="by_note", params={"region": "atlantis"}))
    assert refused.value.rule == "filter.undeclared_value"
    with pytest.raises(Refused) as refused:
        engine.run(request(template="by_kind", params={"kind": "c"}))
    assert refused.value.rule == "filter.undeclared_value" and "shops.kind" in refused.value.message
    assert spent(engine) == before
    assert engine.run(request(template="by_kind", params={"kind": "a"})).table.num_rows >= 1
    assert spent(engine)[1] == before[1] + 1


def test_a_k_only_room_does_not_refuse_them(tmp_path):
    """Nothing is charged without differential privacy: the k test decides, as before."""
    engine = make_engine(tmp_path, privacy=False)
    release = engine.run(request("SELECT region, count(*) FROM visits WHERE region = 'atlantis' GROUP BY region"))
    assert release.table.num_rows == 0


def test_the_decision_reads_the_policy_not_the_data(tmp_path):
    """Rows with an undeclared value exist, and are still never asked for: the refusal
    is the same whether or not the data holds the value."""
    import duckdb

    from gateway.engine import Engine

    make_engine(tmp_path).close()
    with duckdb.connect(str(tmp_path / "data" / "room.duckdb")) as con:
        con.execute("INSERT INTO visits SELECT 'x' || i, 'atlantis', 'north', 1, DATE '2024-01-05', "
                    "TIMESTAMP '2024-01-05 10:00', 'n0', 10 FROM range(100) t(i)")

    again = Engine.from_config_file(tmp_path / "gateway.yaml")
    with pytest.raises(Refused) as refused:
        again.run(request("SELECT count(*) FROM visits WHERE region = 'atlantis'"))
    assert refused.value.rule == "filter.undeclared_value"


# -- the demo over HTTP and the wire ----------------------------------------------------


def test_demo_refusal_over_http_is_a_problem_with_the_declared_values_and_costs_nothing(dp_http_server,
                                                                                        dp_demo_config_path):
    before = get(dp_http_server, "/v1/budget")
    sql = "SELECT purchased_on, count(*) FROM purchases WHERE region = 'atlantis' GROUP BY 1"
    status, problem = post(dp_http_server, "/v1/query", {"sql": sql})
    assert status == 403 and problem["rule"] == "filter.undeclared_value" and problem["sqlstate"] == "42501"
    assert problem["hint"].startswith("declared values of purchases.region: north, south, east, west, central")
    status, problem = post(dp_http_server, "/v1/explain", {"sql": sql})
    assert status == 403 and problem["rule"] == "filter.undeclared_value"
    status, problem = post(dp_http_server, "/v1/query", {
        "sql": "SELECT count(*) FROM impressions WHERE shown_at BETWEEN '2025-01-01' AND '2025-12-31'"})
    assert status == 403 and problem["rule"] == "filter.outside_range"
    assert "2026-01-01 .. 2026-12-31" in problem["hint"]
    assert get(dp_http_server, "/v1/budget")["spent"] == before["spent"]
    records = audit_records(Path(dp_demo_config_path).parent / "state")
    assert any(r.get("sql") == sql and r["rule"] == "filter.undeclared_value" and r["decision"] == "refused"
               for r in records)


def test_demo_refusal_over_the_wire_with_a_bound_parameter(dp_pg):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(dp_pg.dsn()) as conn:
        before = conn.execute("SHOW cleanroom.budget").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute("SELECT category, count(*) FROM purchases WHERE region = %s GROUP BY category", ("Central",))
        assert "never takes 'Central'" in refused.value.diag.message_primary
        assert "did you mean 'central'?" in refused.value.diag.message_hint
        conn.rollback()
        assert conn.execute("SHOW cleanroom.budget").fetchone() == before


def test_demo_prepared_statements_describe_with_stand_ins_and_judge_the_bound_values(dp_pg):
    """A client describes a statement before it binds: the stand-in values are never
    judged; the values bound at execution are."""
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio
    import datetime as dt

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=dp_pg.port, user="analyst", password=PASSWORD,
                                     database="demo", ssl=False)
        try:
            statement = await conn.prepare("SELECT date_trunc('week', purchased_on) AS week, count(*) AS n "
                                           "FROM purchases WHERE region = $1 AND purchased_on <= $2 GROUP BY 1")
            assert [a.name for a in statement.get_attributes()] == ["week", "n"]
            rows = await statement.fetch("central", dt.date(2026, 3, 31))
            assert rows and all(r["week"] <= dt.datetime(2026, 3, 30) for r in rows)
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="never takes 'atlantis'"):
                await statement.fetch("atlantis", dt.date(2026, 3, 31))
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="declared range"):
                await statement.fetch("central", dt.date(2025, 12, 31))
        finally:
            await conn.close()

    asyncio.run(main())
